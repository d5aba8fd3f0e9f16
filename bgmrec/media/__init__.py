"""Media to features: FFmpeg decoding, the extractor table (visual, text, audio), a content-hash cache, the
per-item extraction report and the bundled sample media generator."""

from bgmrec.media.config import ExtractionConfig
from bgmrec.media.decode import MediaError
from bgmrec.media.extract import embed_video_file, extract_dataset, extract_music_files
from bgmrec.media.report import ExtractionReport, ItemFailure

__all__ = [
    "ExtractionConfig",
    "ExtractionReport",
    "ItemFailure",
    "MediaError",
    "embed_video_file",
    "extract_dataset",
    "extract_music_files",
]
