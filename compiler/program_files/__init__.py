"""Programming files: the target conductances of a compiled model for a chip's tools, and the measured
conductances they read back.

The format (``xbar-programming-files`` version 1) is a directory read with numpy and json alone:

* ``manifest.json``: ``format``, ``format_version``, ``xbar_version``, ``chip`` (the chip description, or
  null without a chip target), ``device_model`` (the device model's name when the model or chip records one,
  else null), ``converter``, ``units`` (always ``"uS"``), ``array_shape`` (``[rows, columns]`` of a physical
  array, or null), ``files``, ``arrays`` (each stored array: ``file``, ``key``, ``shape`` and the ``sha256``
  of its float32 little-endian C-order bytes, taken of the targets) and ``regions``.
* With a chip target, ``chip<k>.npz`` for each chip used: for each physical array that holds a region, a
  ``core<c>.array<a>.g_plus`` and a ``core<c>.array<a>.g_minus`` float32 array of ``array_shape``, rows the
  array's inputs, columns its device columns, zeros where no device is used. A region (one replica of one
  tile) holds the block ``W[out_offset : out_offset + out_size, in_offset : in_offset + in_size]`` of its
  layer's ``[out, in x kernel]`` weight (:mod:`xbar.compiler.inspection.region`): its entry gives ``name``
  (the logical array's), ``layer``, ``tile``, the block (``in_offset``, ``in_size``, ``out_offset``,
  ``out_size``, ``in_total``, ``out_total``), ``replica``, and where it sits: ``file``, ``chip``, ``core``,
  ``array`` (the physical array), ``row_offset``, ``col_offset``, and per side the stored key (``g_plus`` /
  ``g_minus``) and ``g_plus_columns`` / ``g_minus_columns`` = ``[first, step]``: element ``(o, i)`` of the
  block's G+ sits at row ``row_offset + i``, column ``first + step * o`` of the ``g_plus`` key, and likewise
  for G-. With the
  chip's ``pair_layout`` ``cell`` G+ and G- share a place (one in each key); ``columns``: G+ on the even,
  G- on the odd device column of the pair (step 2); ``arrays``: G- in the ``g_minus`` key of ``array + 1``.
  Every replica is written; a read-back is taken from replica 0.
* Without a chip target, ``arrays.npz`` with ``<name>.g_plus`` and ``<name>.g_minus`` for each logical
  array, ``[out_size, in_size]`` (the block itself); its region entry gives ``name``, ``layer``, ``tile``,
  the block, ``file`` and the two keys.
* A multi-device converter (``converter.type`` N-pair, dual-pair, custom-pair or single-device; no chip target):
  ``arrays.npz`` holds ``<name>.<device>`` for every device (``g_plus_0``, ``g_minus_0``, ``g_plus_1``, ...
  lowest significance first, or ``g_device``); each region entry adds ``devices`` (the device names, each
  also a key of the entry naming its stored array), ``device_significances`` and ``device_offset`` (the
  weight times the array's scale ratio is ``sum_k c_k G_k + offset``), and the manifest adds
  ``converter_settings`` (``type`` and the converter's arguments). A single pair's files are as above.

A chip's tools write the measured conductances in place of the targets, in the same files, keys and
shapes, and keep the manifest: :func:`load_conductances` and ``xbar import-measured`` read that back,
refusing a manifest of other targets (checksums), missing files or arrays, other shapes, other units,
and NaN or negative conductances.

The second format, ``format="fusion"`` (``--format fusion``), is aihwkit's Fusion CSV: one file in the
layout of aihwkit's ``fusion_export``, one device per weight, written and read back as its
``FusionConductanceConverter`` does (:mod:`.fusion`). :mod:`.formats` switches between the two.
"""
