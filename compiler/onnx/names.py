"""The names and versions of xbar's ONNX domains, plain constants, and :func:`graph_nodes`: what a reader of a
file needs, without the exporter."""

DOMAIN = "ai.xbar"
VERSION = 7
"""Bump whenever an op's meaning changes or an op is added (2: ``CrossbarConvTranspose``;
3: the ``drift_gain`` attribute; 4: per-column scale ratios and drift gains (``column_scale_ratios``,
``column_drift_gains``, ``column_out_scale``), 0 instead of inf for no clip in ``input_clip`` /
``dac_clip`` / ``adc_clip``, the bodies' steps in :data:`PERIPHERY_DOMAIN`; 5: aihwkit's weight
scaling (``mapped_wmax``) and learned output scales (``out_scales``), both folded into the constants; aihwkit's
noise and bound management (``noise_management``, ``nm_thres``, ``bound_management``, ``max_bm_factor``,
``max_bm_res``, ``nm_mode``, ``bm_rounds``), computed from the input at run time by ``ManagedReads``; the
optional weight-region and chip-placement attributes ``in_offset`` ... ``col_offset``, which no body reads;
6: multi-device converters: the optional ``devices``, ``device_significances`` and ``device_offset``
attributes, G_plus computed in the graph from the device initializers, G_minus zeros; the linear and
convolution bodies compute ``ir_drop`` (aihwkit's time-stepped IR-drop model) from the ``ir_drop*``,
``adc_quantization`` and ``adc_frequency`` attributes, which a file now sets, with the constants
``ir_drop_steps``, ``ir_drop_tick`` and ``ir_drop_adc_scale``; a recalibration's per-column offsets
(``column_offsets``), added after the bias by ``Rescale`` / ``RescaleChannels``, its per-column gains being
``column_drift_gains``); 7: ``CrossbarConv`` and ``CrossbarConvTranspose`` compute ABS_MAX / MAX noise
management and bound management, one scale per patch, by ``ManagedPatchReads``)."""
PERIPHERY_DOMAIN = "ai.xbar.periphery"
PERIPHERY_VERSION = 4
"""2: ``ManagedReads``; 3: ``IrDropOperands``, ``PulseCounts``, ``OscillatorCodes``, and ``Rescale`` /
``RescaleChannels`` add ``column_offsets``; 4: ``ManagedReads`` in steps (``NormalisedInput``, ``ReadScales``,
``ManagedDac``, ``ChosenRead``) it shares with ``ManagedPatchReads``, which reads a convolution's ``Patches`` or
``TransposedPatches`` through ``PatchRows`` / ``TransposedPatchRows``."""


def graph_nodes(graph):
    """The nodes of an ``onnx.GraphProto`` and of the graphs in their attributes (a recurrent layer's ``Scan``
    body holds its ai.xbar nodes), depth first, in graph order."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for body in (attribute.g,) if attribute.HasField("g") else attribute.graphs:
                yield from graph_nodes(body)
