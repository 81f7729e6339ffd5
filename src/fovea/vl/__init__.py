"""Vision-language workflows: contrastive training, zero-shot classification, prompt learning, probes."""
