"""Running it safely: the trainer and the pieces both training scripts share, mixed precision,
named datasets and their checks, atomic checkpoints and safe resumes, non-finite loss reports."""
