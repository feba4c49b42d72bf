"""The pipeline: prepare -> calibrate -> (fine-tune) -> convert, the record it keeps, and how it runs
(compiled, or across torch.distributed ranks)."""
