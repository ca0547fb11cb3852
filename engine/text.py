"""Class names → CLIP text embeddings: phrases, prompt-template ensembles, and a per-phrase cache.

A class is written as one or more phrases separated by ``;`` (``"car; automobile"``). Each phrase is
put into every prompt template; each prompt embedding is L2-normalised, the phrase embedding is their
normalised mean, and the class embedding is the normalised mean of its phrases. Embeddings are cached
per phrase, so editing a class list re-encodes only the phrases that are new.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from chimera_engine import class_names, vit_ops
from chimera_engine.prompt_prefix import PrefixCache

DEFAULT_TEMPLATES = "zegclip15"


def load_templates(name_or_list: str | Sequence[str]) -> list[str]:
    """Templates by name (a file in ``resources/prompts``) or as a list; each must contain ``{}``."""
    if isinstance(name_or_list, str):
        path = resources.files("chimera_resources") / "prompts" / f"{name_or_list}.txt"
        if not path.is_file():
            known = sorted(p.name[:-4] for p in (resources.files("chimera_resources") / "prompts").iterdir()
                           if p.name.endswith(".txt"))
            raise ValueError(f"unknown prompt template set {name_or_list!r}; known: {', '.join(known)}")
        lines = path.read_text(encoding="utf-8").splitlines()
        templates = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        templates = list(name_or_list)
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise ValueError("every prompt template must contain exactly one '{}'")
    return templates


def split_phrases(class_name: str) -> list[str]:
    """``"car; automobile"`` → ``["car", "automobile"]``: the grammar of ``chimera_engine.class_names``."""
    return class_names.split_phrases(class_name)


def parse_classes(classes: Sequence[str]) -> list[list[str]]:
    """Validate a class list and split each class into phrases (``chimera_engine.class_names.parse_classes``:
    ClassNameError for an empty list, an empty class, or a phrase used twice)."""
    return class_names.parse_classes(classes)


class TextEncoder:
    """Encodes phrases with a CLIP text tower, with template ensembling and an LRU cache.

    ``encode(classes)`` returns a ``K x C`` float32 tensor of unit-length class embeddings on the CPU.
    """

    def __init__(self, clip_model: torch.nn.Module, templates: str | Sequence[str] = DEFAULT_TEMPLATES,
                 cache_size: int = 4096, tokenizer=None, compute_dtype: torch.dtype | None = None):
        self.model = clip_model
        self.compute_dtype = compute_dtype  # None: the weights' dtype (see chimera_engine.vit_ops on storage)
        self.templates = load_templates(templates)
        self.tokenizer = tokenizer or open_clip.get_tokenizer("ViT-B-16")
        self.prefixes = PrefixCache(clip_model, self.tokenizer, self.templates, compute_dtype) \
            if is_standard_text_tower(clip_model) else None
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.phrases_encoded = 0  # counts real encodes, so tests can prove the cache works

    def has(self, class_name: str) -> bool:
        """Every phrase of ``class_name`` is cached (encoding it costs nothing)."""
        return all(p in self._cache for p in split_phrases(class_name))

    def encode(self, classes: Sequence[str]) -> torch.Tensor:
        parsed = parse_classes(classes)
        wanted = list(dict.fromkeys(p for phrases in parsed for p in phrases))
        missing = [p for p in wanted if p not in self._cache]
        found = dict(zip(missing, self._encode_phrases(missing))) if missing else {}
        for phrase in wanted:  # refresh or insert, then evict the least recently used
            found.setdefault(phrase, self._cache.get(phrase))
            self._cache[phrase] = found[phrase]
            self._cache.move_to_end(phrase)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        rows = [F.normalize(torch.stack([found[p] for p in phrases]).mean(0), dim=0) for phrases in parsed]
        return torch.stack(rows)

    @torch.inference_mode()
    def _encode_phrases(self, phrases: list[str]) -> torch.Tensor:
        """``P`` phrases → ``P x C`` unit embeddings, each the normalised mean over templates."""
        t = len(self.templates)
        if self.prefixes is not None:  # each template's shared words run once (chimera_engine.prompt_prefix)
            emb = self.prefixes.encode(phrases)
        else:
            prompts = [tpl.format(p) for p in phrases for tpl in self.templates]
            context = getattr(self.model, "context_length", None)  # prompts longer than it are truncated
            tokens = self.tokenizer(prompts, context_length=context) if context else self.tokenizer(prompts)
            tokens = tokens.to(next(self.model.parameters()).device)
            emb = encode_text_trimmed(self.model, tokens, self.compute_dtype).reshape(len(phrases), t, -1)
        emb = F.normalize(emb.float(), dim=-1)
        self.phrases_encoded += len(phrases)
        return F.normalize(emb.mean(1), dim=-1).cpu()


def is_standard_text_tower(model: torch.nn.Module) -> bool:
    """CLIP's own causal text tower that pools its end-of-text token (what the engine's forward runs)."""
    return (isinstance(model, open_clip.CLIP) and getattr(model, "text_pool_type", "argmax") == "argmax"
            and model.attn_mask is not None
            and all(isinstance(b, ResidualAttentionBlock) for b in model.transformer.resblocks))


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """``model.encode_text`` on token rows trimmed to the longest prompt (``B x 77`` → ``B x C``).

    ``dtype``: compute in it whatever the weights are stored in (default: the weights' own dtype).

    The text tower is causal and pools the end-of-text token, so the padding after the longest prompt
    never influences the result; dropping it makes short prompts ~7x cheaper. Falls back to the stock
    ``encode_text`` for towers that are not the standard causal CLIP one.
    """
    if not is_standard_text_tower(model):
        return model.encode_text(tokens)
    length = int((tokens != 0).sum(1).max())
    tokens = tokens[:, :length]
    cast_dtype = dtype or model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    # The engine's own block forward (contiguous B x L x W, fused causal attention): see vit_ops.
    x = vit_ops.run_blocks(model.transformer.resblocks, x, causal=True)
    x = vit_ops.layer_norm(model.ln_final, x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    proj = model.text_projection
    return vit_ops.linear(proj, x) if isinstance(proj, torch.nn.Linear) else x @ proj.to(x.dtype)


def tokenizer_for(arch: str):
    """The architecture's own tokenizer (open_clip knows which); CLIP's BPE when it can't say offline.

    An architecture open_clip has no config for (the bundled tiny ones while they are not
    registered, one rebuilt from a checkpoint's stored config) has CLIP's standard text tower:
    it gets CLIP's BPE directly, which is what ``open_clip.get_tokenizer`` would return after
    logging "Model configuration not found" on every model load."""
    if ":" not in arch and open_clip.get_model_config(arch) is None:
        return open_clip.SimpleTokenizer()
    try:
        return open_clip.get_tokenizer(arch)
    except Exception:  # e.g. a hub tokenizer that cannot be fetched offline
        return open_clip.SimpleTokenizer()
