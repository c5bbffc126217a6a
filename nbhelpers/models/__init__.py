"""Model architectures: CLIP towers, classification and fusion heads, SSL backbones, unimodal baselines."""
