"""Jointist (Cheuk et al.): instrument recognition (f_IR), instrument-conditioned transcription (f_T) and
transcription-informed separation (f_MSS). Plain PyTorch modules, their typed configs, the instrument sampler
and the note decoder; the family that trains them lives beside them."""
