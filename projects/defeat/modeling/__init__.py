"""What DeFeat computes: GT masks, losses, schedule, adapters (pure tensor code), the teacher's
alignment, building and freezing, the distiller, the slim CPU backbones and the meta-architectures."""
