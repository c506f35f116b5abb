"""Models: backbones, necks and the task models built from them."""
