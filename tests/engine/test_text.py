"""Class phrases, prompt ensembles, trimming and the text cache."""

import pytest
import torch
import torch.nn.functional as F

from chimera_engine.text import TextEncoder, encode_text_trimmed, load_templates, parse_classes, split_phrases


def test_trimmed_text_encoding_is_identical_to_open_clip(tiny_clip):
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-16")(["a photo of a cat.", "dog", "a very much longer prompt here"])
    with torch.no_grad():
        # fused causal attention vs nn.MultiheadAttention: equal up to float rounding
        torch.testing.assert_close(encode_text_trimmed(tiny_clip, tokens), tiny_clip.encode_text(tokens),
                                   rtol=1e-5, atol=1e-5)


def test_phrases_are_split_and_cleaned():
    assert split_phrases(" car ;  automobile ;; ") == ["car", "automobile"]
    assert split_phrases("traffic   light") == ["traffic light"]
    assert parse_classes(["road", "car; automobile"]) == [["road"], ["car", "automobile"]]


def test_templates_load_by_name_and_validate():
    assert load_templates("single") == ["a photo of a {}."]
    assert len(load_templates("zegclip15")) == 15
    with pytest.raises(ValueError, match="unknown prompt template set"):
        load_templates("nope")
    with pytest.raises(ValueError, match="exactly one"):
        load_templates(["no placeholder"])


def test_ensemble_is_normalised_mean_over_templates_and_phrases(tiny_clip):
    import open_clip

    templates = ["a photo of a {}.", "a drawing of the {}."]
    encoder = TextEncoder(tiny_clip, templates)
    tokenizer = open_clip.get_tokenizer("ViT-B-16")

    def phrase(p):
        with torch.no_grad():
            e = F.normalize(tiny_clip.encode_text(tokenizer([t.format(p) for t in templates])), dim=-1)
        return F.normalize(e.mean(0), dim=0)

    out = encoder.encode(["car; automobile", "tree"])
    expected_car = F.normalize((phrase("car") + phrase("automobile")) / 2, dim=0)
    torch.testing.assert_close(out[0], expected_car, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1], phrase("tree"), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_text_cache_encodes_each_phrase_once(tiny_clip):
    encoder = TextEncoder(tiny_clip, "single")
    first = encoder.encode(["road", "car; automobile"])
    assert encoder.phrases_encoded == 3
    again = encoder.encode(["car; automobile", "road", "tree"])  # reordered + one new class
    assert encoder.phrases_encoded == 4
    torch.testing.assert_close(again[0], first[1])
    torch.testing.assert_close(again[1], first[0])


def test_text_cache_is_bounded(tiny_clip):
    encoder = TextEncoder(tiny_clip, "single", cache_size=2)
    encoder.encode(["a", "b", "c"])
    assert len(encoder._cache) == 2


def test_shared_prefix_encoding_equals_whole_prompts(tiny_clip):
    """Each template's words before the class run once; the result must equal the whole prompts."""
    import open_clip

    from chimera_engine.prompt_prefix import PrefixCache

    tok = open_clip.get_tokenizer("ViT-B-16")
    templates = load_templates("openai80")[:20] + ["{} in the scene.", "a photo of a ({}).", "{}"]
    phrases = ["dog", "traffic light", "a rather long phrase for a thing", "x" * 3, " ".join(["word"] * 80)]
    with torch.no_grad():
        ours = PrefixCache(tiny_clip, tok, templates).encode(phrases)  # P x T x C
        for j, template in enumerate(templates):
            whole = encode_text_trimmed(tiny_clip, tok([template.format(p) for p in phrases]))
            torch.testing.assert_close(ours[:, j], whole, rtol=1e-5, atol=1e-5)


def test_text_encoder_uses_shared_prefixes_and_keeps_its_cache(tiny_clip):
    enc = TextEncoder(tiny_clip, "openai80")
    assert enc.prefixes is not None
    first = enc.encode(["circle", "star"])
    again = enc.encode(["star", "circle", "ring"])
    torch.testing.assert_close(again[:2], first.flip(0))
    assert enc.phrases_encoded == 3


def test_bundled_tiny_archs_get_clips_tokenizer_without_a_warning(caplog):
    """open_clip.get_tokenizer logs "Model configuration not found" for an arch it has no config for
    (the bundled tiny ones before they are registered): tokenizer_for gives CLIP's BPE quietly."""
    import logging

    import open_clip

    from chimera_engine.text import tokenizer_for

    reference = open_clip.SimpleTokenizer()
    with caplog.at_level(logging.DEBUG):
        for arch in ("shapes-tiny", "chimera-tiny", "an-arch-nobody-registered", "ViT-B-16"):
            tokenizer = tokenizer_for(arch)
            assert isinstance(tokenizer, open_clip.SimpleTokenizer)
            assert torch.equal(tokenizer(["a photo of a star."], context_length=32),
                               reference(["a photo of a star."], context_length=32))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_loading_a_bundled_model_logs_no_tokenizer_warning(caplog):
    import logging

    from chimera_engine import load_segmenter

    with caplog.at_level(logging.WARNING):
        load_segmenter("shapes-chimera", device="cpu", precision="fp32")
    assert "Model configuration not found" not in caplog.text
