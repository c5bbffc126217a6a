"""``FusionHead`` layer by layer against Hate-CLIPper's own head, at the sizes of its reported runs.

``ReferenceHead`` below is written from reading ``CLIPClassifier`` in the reference code
(github.com/gokulkarthik/hateclipper, ``engine.py``) for the settings of its runs (``use_pretrained_map``
false, ``num_mapping_layers`` 1, ``caption_mode`` none, no image/text/fine-grained losses):

* ``image_map``/``text_map``: ``Linear(hidden_size, map_dim) -> Dropout(drop_probs[0])`` on each tower's
  ``pooler_output`` (ViT-L/14: 1024 image, 768 text);
* ``F.normalize(p=2, dim=1)`` of each, then ``concat`` (``torch.cat``) or ``cross`` (``torch.bmm`` of
  ``(B, d, 1)`` and ``(B, 1, d)``, reshaped to ``(B, d * d)``);
* ``pre_output``: ``Dropout(drop_probs[1])``, then per pre-output layer ``Linear -> ReLU -> Dropout(drop_probs[2])``;
* ``output``: ``Linear(., 1)``, squeezed to ``(B,)``: the logit BCEWithLogitsLoss and the sigmoid read.

Our head's weights are copied into it by ``load_state_dict`` (so every layer name matches one to one), the same
inputs go in, and each intermediate is compared: the two maps, the fused vector, the pre-output and the logits,
in eval mode and in train mode under the same RNG (so the dropouts sit where the reference's do).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.models.fusion import FusionHead

#: The pooled widths of CLIP ViT-L/14's towers (openai/clip-vit-large-patch14), the reference's inputs.
IMAGE_DIM, TEXT_DIM = 1024, 768
#: Reference main.py's default drop_probs: map, fusion, pre-output.
DROP_PROBS = (0.1, 0.4, 0.2)


class ReferenceHead(nn.Module):
    """Hate-CLIPper's head as its engine.py builds and runs it (see the module docstring)."""

    def __init__(self, fusion: str, map_dim: int, num_pre_output_layers: int, drop_probs=DROP_PROBS) -> None:
        super().__init__()
        self.fusion = fusion
        self.image_map = nn.Sequential(nn.Linear(IMAGE_DIM, map_dim), nn.Dropout(p=drop_probs[0]))
        self.text_map = nn.Sequential(nn.Linear(TEXT_DIM, map_dim), nn.Dropout(p=drop_probs[0]))
        pre_output_input_dim = {"concat": map_dim * 2, "cross": map_dim**2}[fusion]
        layers: list[nn.Module] = [nn.Dropout(p=drop_probs[1])]
        output_input_dim = pre_output_input_dim
        if num_pre_output_layers >= 1:
            layers += [nn.Linear(pre_output_input_dim, map_dim), nn.ReLU(), nn.Dropout(p=drop_probs[2])]
            output_input_dim = map_dim
        for _ in range(1, num_pre_output_layers):
            layers += [nn.Linear(map_dim, map_dim), nn.ReLU(), nn.Dropout(p=drop_probs[2])]
        self.pre_output = nn.Sequential(*layers)
        self.output = nn.Linear(output_input_dim, 1)

    def forward(self, image_pooled: torch.Tensor, text_pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        image_features = self.image_map(image_pooled)
        text_features = self.text_map(text_pooled)
        out = {"image_map": image_features, "text_map": text_features}
        image_features = F.normalize(image_features, p=2, dim=1)
        text_features = F.normalize(text_features, p=2, dim=1)
        if self.fusion == "concat":
            features = torch.cat([image_features, text_features], dim=1)
        else:
            features = torch.bmm(image_features.unsqueeze(2), text_features.unsqueeze(1))
            features = features.reshape(features.shape[0], -1)
        out["fused"] = features
        out["pre_output"] = self.pre_output(features)
        out["logits"] = self.output(out["pre_output"]).squeeze(dim=1)
        return out


def _ours_with_intermediates(
    head: FusionHead, img: torch.Tensor, txt: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Our head's forward, with what each of its layers saw and gave captured by hooks."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        head.image_map.register_forward_hook(lambda m, i, o: seen.__setitem__("image_map", o)),
        head.text_map.register_forward_hook(lambda m, i, o: seen.__setitem__("text_map", o)),
        head.pre_output.register_forward_pre_hook(lambda m, i: seen.__setitem__("fused", i[0])),
        head.pre_output.register_forward_hook(lambda m, i, o: seen.__setitem__("pre_output", o)),
    ]
    try:
        seen["logits"] = head(img, txt)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize(
    ("fusion", "map_dim", "pre_output_layers"),
    [
        ("cross", 1024, 0),  # the reported best row: a 1024 * 1024 = 1M-wide fused vector
        ("concat", 32, 0),  # the reported concat row
        ("cross", 32, 1),  # the reference run.sh's head
        ("concat", 32, 2),
    ],
)
@pytest.mark.parametrize("train_mode", [False, True])
def test_head_matches_the_reference_layer_by_layer(fusion, map_dim, pre_output_layers, train_mode):
    torch.manual_seed(0)
    ours = FusionHead(IMAGE_DIM, TEXT_DIM, fusion, map_dim, pre_output_layers, dropout=DROP_PROBS)
    reference = ReferenceHead(fusion, map_dim, pre_output_layers)
    reference.load_state_dict(ours.state_dict())  # strict: the same layers under the same names
    ours.train(train_mode)
    reference.train(train_mode)
    img, txt = torch.randn(3, IMAGE_DIM), torch.randn(3, TEXT_DIM)

    torch.manual_seed(1)
    got = _ours_with_intermediates(ours, img, txt)
    torch.manual_seed(1)
    want = reference(img, txt)

    assert got["fused"].shape == (3, {"concat": 2 * map_dim, "cross": map_dim * map_dim}[fusion])
    assert got["logits"].shape == (3,)
    for name in ("image_map", "text_map", "fused", "pre_output", "logits"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
    if train_mode:  # the dropouts did drop something, at the same places in both
        assert (got["image_map"] == 0).any() and (got["pre_output"] == 0).any()


def test_the_best_rows_head_has_the_references_parameter_count():
    head = FusionHead(IMAGE_DIM, TEXT_DIM, "cross", 1024, 0, dropout=DROP_PROBS)
    reference = ReferenceHead("cross", 1024, 0)
    count = sum(p.numel() for p in head.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    assert count == (IMAGE_DIM + 1) * 1024 + (TEXT_DIM + 1) * 1024 + 1024 * 1024 + 1
    assert [type(m) for m in head.pre_output] == [nn.Dropout]  # pre_output_layers=0: only the fusion dropout
    assert [m.p for m in (head.image_map[1], head.text_map[1], head.pre_output[0])] == [0.1, 0.1, 0.4]
