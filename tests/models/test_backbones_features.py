"""``features="pooled"``: each family's vectors before its contrastive projection, against the model's own
sub-modules; the BLIP-2 ``Blip2Model`` backbone; and the real sizes of the backbones Hate-CLIPper's rows use.

Real-size models are built random-init from configs with the published sizes (no weights can be downloaded
here). CLIP ViT-L/14 is built whole (in the fusion recipe's smoke test); BLIP-large and BLIP-2 Flan-T5-XL are
built with the real widths but fewer layers (the feature path does not depend on depth, and BLIP-2 Flan-T5-XL's
3.9B parameters are too many for a CPU test).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from nbhelpers.models.backbones import (
    HFBlip2ModelBackbone,
    HFBlipBackbone,
    HFClipBackbone,
    OpenClipBackbone,
    build_backbone,
    hf_family,
)
from tests.helpers import register_open_clip_config, write_bert_vocab
from tests.models.test_backbones import TEXTS, TINY_VISION, WORDS, _pixel_batch, _write_clip_tokenizer


def vit_l14_config(tokenizer: transformers.PreTrainedTokenizerBase) -> transformers.CLIPConfig:
    """openai/clip-vit-large-patch14's sizes (its config.json); the tokenizer only sets the special ids."""
    return transformers.CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=224, patch_size=14, hidden_act="quick_gelu",
        ),
        projection_dim=768,
    )  # fmt: skip


def test_open_clip_pooled_features_are_the_inputs_of_its_projections(tmp_path):
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 40, "patch_size": 8, "head_width": 20},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 24, "heads": 2, "layers": 1},
    }
    name = register_open_clip_config(tmp_path, "memelab-test-pooled", cfg)
    torch.manual_seed(0)
    pooled = OpenClipBackbone(name, features="pooled")
    projected = OpenClipBackbone(name)
    projected.model.load_state_dict(pooled.model.state_dict())
    assert (pooled.image_dim, pooled.text_dim) == (40, 24)
    assert (projected.image_dim, projected.text_dim) == (16, 16)
    pixels = _pixel_batch(pooled, 2)
    img, txt = pooled.encode_image(pixels), pooled.encode_text(TEXTS)
    torch.testing.assert_close(img @ pooled.model.visual.proj, projected.encode_image(pixels))
    torch.testing.assert_close(txt @ pooled.model.text_projection, projected.encode_text(TEXTS))
    # The projections are put back after every call.
    assert pooled.model.visual.proj is not None and pooled.model.text_projection is not None


def test_hf_clip_pooled_features_are_the_towers_pooler_output(tmp_path):
    """What the reference engine.py feeds its maps: ``vision_model(...).pooler_output``, ``text_model(...)``'s."""
    tokenizer = _write_clip_tokenizer(tmp_path)
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=24, intermediate_size=48, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=TINY_VISION,
        projection_dim=12,
    )  # fmt: skip
    torch.manual_seed(0)
    reference = transformers.CLIPModel(config).eval()
    reference.save_pretrained(tmp_path)
    backbone = build_backbone("hf:" + str(tmp_path), features="pooled")
    assert isinstance(backbone, HFClipBackbone) and (backbone.image_dim, backbone.text_dim) == (32, 24)
    pixels, tokens = _pixel_batch(backbone, 2), backbone.tokenize(TEXTS)
    img, txt = backbone.encode_image(pixels), backbone.encode_text(tokens)
    with torch.no_grad():
        want_img = reference.vision_model(pixel_values=pixels).pooler_output
        want_txt = reference.text_model(**tokens).pooler_output
    torch.testing.assert_close(img, want_img)
    torch.testing.assert_close(txt, want_txt)
    projected = build_backbone("hf:" + str(tmp_path))
    torch.testing.assert_close(reference.visual_projection(img), projected.encode_image(pixels))


def test_hf_blip_pooled_features_enter_the_itc_projections(tmp_path):
    tokenizer = write_bert_vocab(tmp_path, WORDS)
    tokenizer.save_pretrained(tmp_path)
    config = transformers.BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=24, encoder_hidden_size=32, intermediate_size=48,
            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
        ),
        vision_config=TINY_VISION,
        image_text_hidden_size=20,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BlipForImageTextRetrieval(config).save_pretrained(tmp_path)
    pooled = build_backbone("hf:" + str(tmp_path), features="pooled")
    projected = build_backbone("hf:" + str(tmp_path))
    assert isinstance(pooled, HFBlipBackbone) and (pooled.image_dim, pooled.text_dim) == (32, 24)
    pixels = _pixel_batch(pooled, 2)
    model = pooled.model
    torch.testing.assert_close(model.vision_proj(pooled.encode_image(pixels)), projected.encode_image(pixels))
    torch.testing.assert_close(model.text_proj(pooled.encode_text(TEXTS)), projected.encode_text(TEXTS))


def _blip2_t5_config(vocab: int, *, vision: dict, qformer_width: int, t5: dict, queries: int):
    return transformers.Blip2Config(
        vision_config=vision,
        qformer_config=dict(
            vocab_size=vocab, hidden_size=qformer_width, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=2 * qformer_width, encoder_hidden_size=vision["hidden_size"],
        ),
        text_config=dict(model_type="t5", vocab_size=vocab, **t5),
        num_query_tokens=queries,
    )  # fmt: skip


def test_blip2_model_reads_qformer_queries_and_a_t5_encoder_layer(tmp_path):
    tokenizer = write_bert_vocab(tmp_path, WORDS)  # any tokenizer whose ids fit T5's vocabulary
    tokenizer.save_pretrained(tmp_path)
    t5 = dict(d_model=16, d_ff=32, num_heads=2, d_kv=8, num_layers=6, num_decoder_layers=1)
    config = _blip2_t5_config(len(tokenizer), vision=TINY_VISION, qformer_width=24, t5=t5, queries=4)
    torch.manual_seed(0)
    reference = transformers.Blip2Model(config).eval()
    reference.save_pretrained(tmp_path)
    assert hf_family(transformers.AutoConfig.from_pretrained(tmp_path)) is HFBlip2ModelBackbone
    with pytest.raises(ValueError, match="gives only"):
        build_backbone("hf:" + str(tmp_path))  # no ITC heads: nothing "projected" to give
    backbone = build_backbone("hf:" + str(tmp_path), features="pooled")
    assert (backbone.image_dim, backbone.text_dim) == (24, 16)
    pixels, tokens = _pixel_batch(backbone, 2), backbone.tokenize(TEXTS)
    img, txt = backbone.encode_image(pixels), backbone.encode_text(tokens)
    with torch.no_grad():
        queries = reference.get_qformer_features(pixel_values=pixels)
        queries = getattr(queries, "last_hidden_state", queries)  # (B, Q, 24)
        hidden = reference.language_model.get_encoder()(**tokens, output_hidden_states=True).hidden_states[
            5
        ]  # (B, L, 16): after encoder block 5
    torch.testing.assert_close(img, queries.mean(dim=1), rtol=1e-4, atol=1e-5)
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(txt, (hidden * mask).sum(1) / mask.sum(1), rtol=1e-4, atol=1e-5)
    # The padding does not change a caption's feature.
    torch.testing.assert_close(backbone.encode_text(["cat"]), txt[2:3], rtol=1e-4, atol=1e-5)


def test_blip_itm_large_coco_sizes_at_reduced_depth(tmp_path):
    """Salesforce/blip-itm-large-coco's widths (ViT-L/16 at 384 px, BERT-base text) with 1 layer per tower
    (24 and 12 in the real model): the pooled features are 1024 (image) and 768 (text)."""
    tokenizer = write_bert_vocab(tmp_path, WORDS)
    config = transformers.BlipConfig(
        vision_config=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=1, num_attention_heads=16,
            image_size=384, patch_size=16,
        ),
        text_config=dict(
            vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=1,
            num_attention_heads=12, encoder_hidden_size=1024, max_position_embeddings=512,
        ),
        image_text_hidden_size=256,
    )  # fmt: skip
    backbone = HFBlipBackbone.from_config(config, tokenizer, features="pooled")
    assert (backbone.image_dim, backbone.text_dim, backbone.image_size) == (1024, 768, 384)
    assert backbone.encode_image(_pixel_batch(backbone, 1)).shape == (1, 1024)
    assert backbone.encode_text(TEXTS).shape == (3, 768)


@pytest.mark.slow
def test_blip2_flan_t5_xl_sizes_at_reduced_depth(tmp_path):
    """Salesforce/blip2-flan-t5-xl's widths (EVA ViT-g 1408 at 224 px, Q-Former 768 with 32 queries, Flan-T5-XL
    d_model 2048) with 1 vision, 1 Q-Former, 5 encoder and 1 decoder layers (39, 12, 24 and 24 in the real
    model): the pooled features are 768 (image) and 2048 (text, after encoder block 5)."""
    tokenizer = write_bert_vocab(tmp_path, WORDS)
    vision = dict(
        hidden_size=1408, intermediate_size=6144, num_hidden_layers=1, num_attention_heads=16,
        image_size=224, patch_size=14,
    )  # fmt: skip
    t5 = dict(
        d_model=2048, d_ff=5120, num_heads=32, d_kv=64, num_layers=5, num_decoder_layers=1,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
    )  # fmt: skip
    config = _blip2_t5_config(32128, vision=vision, qformer_width=768, t5=t5, queries=32)
    backbone = HFBlip2ModelBackbone.from_config(config, tokenizer, features="pooled")
    assert (backbone.image_dim, backbone.text_dim, backbone.image_size) == (768, 2048, 224)
    assert backbone.encode_image(_pixel_batch(backbone, 1)).shape == (1, 768)
    assert backbone.encode_text(TEXTS).shape == (3, 2048)
