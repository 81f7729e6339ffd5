"""Image captioning (issue 19): a BLIP-style captioner trained on captions generated from the scene
generators' ground truth, decoded greedily or with Medusa heads, scored with BLEU-4, CIDEr-D and the
attributes read back from the caption."""
