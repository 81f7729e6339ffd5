"""The captioner's pieces against hand computations: vocabulary, BLEU-4, CIDEr-D, BLIP's objectives,
attribute read-back; and a tiny captioner that must learn its training captions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.caption.metrics import attribute_accuracy, bleu4, cider_d, read_apple_caption
from fovea.caption.objectives import itc_loss, itm_batch, lm_loss, sample_hard_negatives
from fovea.caption.vocab import BOS, EOS, PAD, UNK, Vocab, words
from fovea.errors import ConfigError


def test_vocab_round_trip_and_errors():
    v = Vocab.build(["A bruised apple, small.", "a good apple"])
    assert v.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    ids = v.encode("a bruised apple, small.")
    assert ids[0] == BOS and ids[-1] == EOS and v.decode(ids[1:]) == "a bruised apple, small."
    assert v.encode("a purple apple")[2] == UNK
    batch, pad = v.batch(["a good apple", "a bruised apple, small."], max_len=5)
    assert batch.shape == (2, 5) and batch[1, -1] == EOS and pad[0].tolist() == [False] * 5
    assert v.batch(["a good apple", "a"], max_len=8)[1][1].tolist() == [False] * 3 + [True] * 2
    assert batch[0, -1] == EOS and PAD == 0
    with pytest.raises(ConfigError, match="must start with"):
        Vocab(["a", "b"])


def test_bleu4_by_hand():
    assert bleu4(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(1.0)
    # hyp 7 words, ref 8: p1 = 7/7, p2 = 5/6, p3 = 3/5, p4 = 2/4 (n-grams across "the red" are missing)
    hyp, ref = "the cat sat on the red mat", "the cat sat on the big red mat"
    p = [1.0, 5 / 6, 3 / 5, 2 / 4]
    expected = math.exp(1 - 8 / 7) * math.exp(sum(math.log(x) for x in p) / 4)
    assert bleu4([hyp], [[ref]]) == pytest.approx(expected)
    assert bleu4(["a b c"], [["x y z w"]]) == 0.0
    # clipping: 'the the the the' against 'the cat' has p1 = 1/4
    assert words("A, b.") == ["a", ",", "b", "."]


def test_cider_d_by_hand():
    refs = [["a red apple"], ["a green pear"]]
    # a hypothesis equal to its reference: cosine 1 for every n with a non-zero idf vector -> 10 x mean
    # n = 1: idf('a') = 0 but 'red', 'apple' > 0 -> cos 1; n = 2: both bigrams unique -> 1; n = 3: 1; n = 4: empty -> 0
    assert cider_d(["a red apple", "a green pear"], refs) == pytest.approx(10 * 3 / 4)
    assert cider_d(["a green pear", "a red apple"], refs) == pytest.approx(0.0)
    # length penalty: one extra word -> exp(-1 / 72) on the matching n-gram terms
    score = cider_d(["a red apple x", "a green pear"], refs)
    assert score < 10 * 3 / 4


def test_itc_targets_spread_over_duplicate_captions():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    same = torch.eye(4, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    scale = torch.tensor(5.0)
    logits = scale * img @ txt.T
    slow = 0.0
    for i in range(4):
        pos = same[i].nonzero().flatten()
        slow += -torch.log_softmax(logits[i], 0)[pos].mean() / 2 / 4
        slow += -torch.log_softmax(logits[:, i], 0)[pos].mean() / 2 / 4
    assert torch.allclose(itc_loss(img, txt, scale, same), slow, atol=1e-6)


def test_hard_negatives_never_positive_and_follow_the_softmax():
    sim = torch.tensor([[5.0, 1.0, 2.0, 0.0], [1.0, 5.0, 0.0, 0.5], [2.0, 0.0, 5.0, 1.0], [0.0, 0.5, 1.0, 5.0]])
    same = torch.eye(4, dtype=torch.bool)
    same[0, 2] = same[2, 0] = True  # 0 and 2 share a caption: never each other's negative
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, same, gen) for _ in range(4000)])
    assert not any(bool(same[i, draws[:, i]].any()) for i in range(4))
    w = torch.softmax(sim[1], 0).masked_fill(same[1], 0)
    expected = (w / w.sum())[[0, 2, 3]]
    freq = torch.stack([(draws[:, 1] == j).float().mean() for j in (0, 2, 3)])
    assert torch.allclose(freq, expected, atol=0.03)
    with pytest.raises(ValueError, match="no negative"):
        sample_hard_negatives(sim[:2, :2], torch.ones(2, 2, dtype=torch.bool))
    ii, tt, labels = itm_batch(sim, same, gen)
    assert labels.tolist() == [1] * 4 + [0] * 8
    assert not any(bool(same[i, t]) for i, t, y in zip(ii, tt, labels) if y == 0)


def test_lm_loss_ignores_padding():
    logits = torch.randn(2, 4, 6)
    ids = torch.tensor([[1, 4, 5, 2], [1, 3, 2, 0]])
    terms = [F.cross_entropy(logits[b, t][None], ids[b, t + 1][None]) for b in range(2) for t in range(3)
             if ids[b, t + 1] != PAD]
    assert torch.allclose(lm_loss(logits, ids), torch.stack(terms).mean(), atol=1e-6)


def test_apple_attributes_read_back():
    r = read_apple_caption("a photo of a damaged red apple with a small bruise on the left side")
    assert r == {"damaged": True, "kind": "bruise", "position": "on the left side", "size": "small"}
    assert read_apple_caption("a photo of a good green apple")["damaged"] is False
    truths = [{"damaged": True, "main_kind": "cut", "position": "at the top", "size": "large"},
              {"damaged": False}]
    acc = attribute_accuracy(["a damaged apple with a large cut at the bottom", "a fresh apple"], truths)
    assert acc == {"damaged": 1.0, "kind": 1.0, "position": 0.0, "size": 1.0}


def test_a_tiny_captioner_learns_its_training_captions():
    from fovea.caption.predictor import CaptionPredictor
    from fovea.caption.train import CaptionTrainConfig, train_captioner
    from fovea.models.captioner import CaptionerConfig
    from fovea.models.text_decoder import TextDecoderConfig
    from fovea.synth.captions import CaptionSample

    rng = np.random.default_rng(0)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    texts = ["a red square", "a green square, small", "a blue disc", "a yellow disc at the top"]
    samples = [CaptionSample((np.array(c, np.uint8) + rng.integers(0, 10, (32, 32, 3))).astype(np.uint8), [t, t])
               for c, t in zip(colours, texts)]
    cfg = CaptionerConfig(backbone="test_efficientnet", weights="random", embed_dim=16, max_caption_len=8,
                          text=TextDecoderConfig(dim=32, depth=1, heads=2, max_len=12))
    pipe, history = train_captioner(samples, cfg, CaptionTrainConfig(steps=150, batch=4, lr=1e-2, input_size=32))
    assert history[-1]["lm"] < 0.1 * history[0]["lm"]
    got = [r.text for r in CaptionPredictor.from_pipeline(pipe).predict([s.image for s in samples])]
    assert got == texts


def test_self_distillation_targets_cut_each_greedy_caption_after_its_end_token():
    from fovea.caption.train import _greedy_targets

    generated = torch.tensor([[5, 6, EOS, 7], [EOS, 3, 3, 3], [4, 4, 4, 4]])

    class _Cap:  # stands in for the captioner: identity projection, image i's greedy caption = generated[i]
        def image_proj(self, feats):
            return feats

        def generate(self, memory, bos):
            return generated[memory[:, 0, 0].long()], None

    ids, pad = _greedy_targets(_Cap(), torch.arange(3.0).view(3, 1, 1), batch=2)
    assert ids.tolist() == [[BOS, 5, 6, EOS, PAD], [BOS, EOS, PAD, PAD, PAD], [BOS, 4, 4, 4, 4]]
    assert pad.tolist() == [[False] * 4 + [True], [False, False, True, True, True], [False] * 5]


def test_medusa_captions_with_the_measured_tree_equal_greedy_captions():
    from fovea.caption.pipeline import CaptionPipeline
    from fovea.caption.train import (decode_captions, greedy_caption_ids, medusa_path_probabilities,
                                     medusa_tree_for_cost, train_medusa_heads)
    from fovea.nn.medusa import frequent_openings, tree_buffers
    from fovea.models.captioner import Captioner, CaptionerConfig
    from fovea.models.text_decoder import TextDecoderConfig
    from fovea.synth.captions import CaptionSample

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    texts = ["a red square", "a green square, small", "a blue disc", "a yellow disc at the top"]
    samples = [CaptionSample(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), [t, t]) for t in texts]
    vocab = Vocab.build(texts)
    cfg = CaptionerConfig(backbone="test_efficientnet", weights="random", embed_dim=16, max_caption_len=10,
                          text=TextDecoderConfig(vocab_size=len(vocab), dim=32, depth=1, heads=2, max_len=40))
    pipe = CaptionPipeline(Captioner(cfg), vocab, (32, 32)).eval()  # untrained: long, arbitrary captions
    heads = train_medusa_heads(pipe, samples, num_heads=3, steps=30, lr=1e-2)
    ranked = medusa_path_probabilities(pipe, heads, samples)
    tree = medusa_tree_for_cost(heads, ranked, step_cost_fixed=100.0, step_cost_per_token=1.0)
    assert set(heads.choices) == set(tree.choices) and len(tree.choices) >= 1
    assert all(c[:-1] in tree.choices for c in tree.choices if len(c) > 1)
    assert [v for _, v in ranked] == sorted((v for _, v in ranked), reverse=True)
    images = [s.image for s in samples]
    greedy, g = decode_captions(pipe, images)
    medusa, m = decode_captions(pipe, images, heads)  # no tree: the one the heads carry
    assert medusa == greedy and m["tokens"] == g["tokens"] and m["forwards"] <= g["forwards"]
    ids = greedy_caption_ids(pipe, samples)
    assert [pipe.vocab.decode(i) for i in ids] == greedy and sum(map(len, ids)) == g["tokens"]
    opening = tree_buffers(frequent_openings(ids, 0.25))  # every caption's first tokens are drafted
    drafted, d = decode_captions(pipe, images, heads, opening=opening)
    assert drafted == greedy and d["forwards"] < m["forwards"]


def _trained_tiny_pipeline(texts: list[str], steps: int = 150):
    """A tiny captioner trained on one image per text (each a flat colour): it learns to say each text."""
    from fovea.caption.train import CaptionTrainConfig, train_captioner
    from fovea.models.captioner import CaptionerConfig
    from fovea.models.text_decoder import TextDecoderConfig
    from fovea.synth.captions import CaptionSample

    rng = np.random.default_rng(0)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    samples = [CaptionSample((np.array(c, np.uint8) + rng.integers(0, 10, (32, 32, 3))).astype(np.uint8), [t, t])
               for c, t in zip(colours, texts)]
    cfg = CaptionerConfig(backbone="test_efficientnet", weights="random", embed_dim=16, max_caption_len=10,
                          text=TextDecoderConfig(dim=32, depth=1, heads=2, max_len=24))
    pipe, _ = train_captioner(samples, cfg, CaptionTrainConfig(steps=steps, batch=4, lr=1e-2, input_size=32))
    return pipe, samples


def test_medusa2_tunes_copies_keeps_the_captions_and_its_decoder_helps_the_heads():
    """Joint training on copies: the originals are untouched, the frozen parts stay equal, the tuned decoder still
    says its captions (self-distillation), its heads end with a lower loss than heads trained as long on the
    frozen decoder (decoder_lr 0: the same loop without the decoder's part), and Medusa on the tuned pair equals
    the tuned decoder's greedy captions."""
    from fovea.caption.train import (_backbone_tokens, _greedy_targets, decode_captions, train_medusa2,
                                     train_medusa_heads)
    from fovea.errors import DataError
    from fovea.nn.medusa import MedusaHeads, medusa_loss, tree_buffers

    texts = ["a photo of a red square", "a photo of a green square, small", "a photo of a blue disc",
             "a photo of a yellow disc at the top"]
    pipe, samples = _trained_tiny_pipeline(texts)
    images = [s.image for s in samples]
    assert decode_captions(pipe, images)[0] == texts
    torch.manual_seed(0)
    heads = train_medusa_heads(pipe, samples, num_heads=4, steps=20, lr=1e-2)
    before = {k: v.clone() for k, v in pipe.captioner.state_dict().items()}
    heads_before = {k: v.clone() for k, v in heads.state_dict().items()}

    def heads_loss(p, h):
        cap = p.captioner
        feats = _backbone_tokens(p, images)
        ids, pad = _greedy_targets(cap, feats)
        with torch.no_grad():
            hidden, _ = cap.text(ids, memory=cap.image_proj(feats))
            return float(medusa_loss(h(hidden), ids.masked_fill(pad, -100)))

    kw = dict(steps=60, batch=4, lr=1e-2, head_weight=1.0, decay=1.0)
    tuned, tuned_heads = train_medusa2(pipe, samples, heads, decoder_lr=3e-3, **kw)
    frozen, frozen_heads = train_medusa2(pipe, samples, heads, decoder_lr=0.0, **kw)
    assert all(torch.equal(v, before[k]) for k, v in pipe.captioner.state_dict().items())  # the original: untouched
    assert all(torch.equal(v, heads_before[k]) for k, v in heads.state_dict().items())
    after = tuned.captioner.state_dict()
    assert not torch.equal(after["text.layers.0.mlp.0.weight"], before["text.layers.0.mlp.0.weight"])
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith(("backbone.", "image_proj.")))
    assert all(torch.equal(v, before[k]) for k, v in frozen.captioner.state_dict().items())
    assert heads_loss(tuned, tuned_heads) < heads_loss(frozen, frozen_heads) < heads_loss(pipe, heads)
    greedy = decode_captions(tuned, images)[0]
    assert greedy == texts  # self-distillation kept what the decoder says
    tree = tree_buffers([(0,), (0, 0), (0, 0, 0), (0, 0, 0, 0)])
    medusa, m = decode_captions(tuned, images, tuned_heads, tree=tree)
    assert medusa == greedy and m["forwards"] < sum(len(t.split()) + 1 for t in texts)
    with pytest.raises(ValueError, match="steps >= 1"):
        train_medusa2(pipe, samples, heads, steps=0)
    with pytest.raises(DataError, match="no samples"):
        train_medusa2(pipe, [], heads)
    with pytest.raises(ValueError, match="heads trained for this pipeline"):
        train_medusa2(pipe, samples, MedusaHeads(16, len(pipe.vocab)))
