"""The bundled sample data set, generated on the fly (no media in git): synthetic music clips and short videos with
a planted audio-visual correspondence that a content model can learn, plus multilingual descriptions.

Each music clip has three latent factors, and the videos that use it show the same factors (with noise):
- pitch register (base note) ↔ colour hue of the video (low notes red/orange … high notes blue/violet);
- tempo (BPM) ↔ density and drifting speed of the stripes (the CNN sees frames, so density carries it per frame);
- timbre brightness (harmonic roll-off, hi-hat level) ↔ texture (fine high-contrast grain vs. smooth surfaces).
Per-video nuisance (stripe angle, a moving disc of random colour, brightness) is independent of the music.
Descriptions (most videos, six languages) name the subject (random) and the tempo and register in words.
Two knobs keep the task from being solved outright: each video shows its music's factors with a Gaussian jitter
(`visual_noise`), and a share of videos (`off_topic_fraction`) shows random factors, as a video whose music was
chosen for reasons its frames do not show; their music can only be found by chance.

Music is synthesised with numpy and written with soundfile (WAV, FLAC, Ogg Vorbis); video frames are rendered with
numpy and encoded to H.264 mp4 by FFmpeg. Manifests follow the contract, paths relative to the output directory.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bgmrec.data.contract import write_manifests
from bgmrec.media.config import section_params
from bgmrec.media.decode import ffmpeg_exe

AUDIO_RATE = 22050  # written at 22.05 kHz on purpose: extraction resamples to 16 kHz
AUDIO_FORMATS = (("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"))
PITCH_RANGE = (45, 77)  # MIDI notes A2 .. F5
TEMPO_RANGE = (70.0, 170.0)  # BPM
HUE_SPAN = 0.75  # hue runs over 3/4 of the wheel so the lowest and highest registers never meet

LANGUAGES = ("en", "es", "fr", "de", "it", "pt")
SUBJECTS = {
    "en": [
        "a day at the beach",
        "the city at night",
        "my cat playing",
        "cooking dinner",
        "a walk in the forest",
        "skateboarding in the park",
        "a rainy afternoon",
        "dancing with friends",
    ],
    "es": [
        "un día en la playa",
        "la ciudad de noche",
        "mi gato jugando",
        "cocinando la cena",
        "un paseo por el bosque",
        "patinando en el parque",
        "una tarde lluviosa",
        "bailando con amigos",
    ],
    "fr": [
        "une journée à la plage",
        "la ville la nuit",
        "mon chat qui joue",
        "préparer le dîner",
        "une promenade en forêt",
        "du skate au parc",
        "un après-midi pluvieux",
        "danser avec des amis",
    ],
    "de": [
        "ein Tag am Strand",
        "die Stadt bei Nacht",
        "meine Katze beim Spielen",
        "Abendessen kochen",
        "ein Spaziergang im Wald",
        "Skateboarden im Park",
        "ein verregneter Nachmittag",
        "mit Freunden tanzen",
    ],
    "it": [
        "una giornata al mare",
        "la città di notte",
        "il mio gatto che gioca",
        "cucinare la cena",
        "una passeggiata nel bosco",
        "skateboard al parco",
        "un pomeriggio piovoso",
        "ballare con gli amici",
    ],
    "pt": [
        "um dia na praia",
        "a cidade à noite",
        "meu gato brincando",
        "cozinhando o jantar",
        "um passeio na floresta",
        "andando de skate no parque",
        "uma tarde chuvosa",
        "dançando com amigos",
    ],
}
TEMPO_WORDS = {  # slow, steady, fast
    "en": ["calm and slow", "relaxed and steady", "fast and energetic"],
    "es": ["tranquilo y lento", "relajado y constante", "rápido y enérgico"],
    "fr": ["calme et lent", "détendu et régulier", "rapide et énergique"],
    "de": ["ruhig und langsam", "entspannt und gleichmäßig", "schnell und energisch"],
    "it": ["calmo e lento", "rilassato e regolare", "veloce ed energico"],
    "pt": ["calmo e lento", "relaxado e constante", "rápido e enérgico"],
}
REGISTER_WORDS = {  # low, middle, high register
    "en": ["dark and deep", "warm", "bright and light"],
    "es": ["oscuro y profundo", "cálido", "brillante y ligero"],
    "fr": ["sombre et profond", "chaleureux", "lumineux et léger"],
    "de": ["dunkel und tief", "warm", "hell und leicht"],
    "it": ["scuro e profondo", "caldo", "luminoso e leggero"],
    "pt": ["escuro e profundo", "quente", "brilhante e leve"],
}


@dataclass
class SampleMediaConfig:
    """Size and shape of the generated sample; the defaults are the bundled sample (params.yaml `sample_media:`)."""

    n_music: int = 400
    n_videos: int = 1000
    music_seconds_min: float = 6.0
    music_seconds_max: float = 8.0
    video_seconds_min: float = 2.0
    video_seconds_max: float = 2.5
    video_size: int = 112
    video_fps: int = 12
    text_fraction: float = 0.8
    word_noise: float = 0.25
    # standard deviation of the per-video jitter of each factor (factor range 0..1) before the video is rendered
    visual_noise: float = 0.07
    # share of videos whose frames and description show random factors instead of their music's: no model ranks
    # their music better than chance, so no Recall@K can reach 1
    off_topic_fraction: float = 0.1
    popularity_exponent: float = 0.8
    workers: int = 2
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> SampleMediaConfig:
        config = cls(**section_params(cls, params, "sample_media"))
        if config.n_music < 2 or config.n_videos < 2 * config.n_music:
            raise ValueError(
                f"sample_media: need n_music >= 2 and n_videos >= 2 * n_music (every music gets 2 videos or more), "
                f"got {config.n_music} music and {config.n_videos} videos"
            )
        if not config.visual_noise >= 0:
            raise ValueError(f"sample_media: visual_noise is {config.visual_noise}, expected 0 or more")
        if not 0 <= config.off_topic_fraction <= 1:
            raise ValueError(f"sample_media: off_topic_fraction is {config.off_topic_fraction}, expected 0 to 1")
        return config


def _latents(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stratified latent factors in [0, 1] (each factor covers its range evenly, factors shuffled independently)."""

    def stratified() -> np.ndarray:
        return (rng.permutation(n) + rng.random(n)) / n

    return {"pitch": stratified(), "tempo": stratified(), "timbre": stratified()}


def synthesise_music(
    pitch: float, tempo: float, timbre: float, seconds: float, rng: np.random.Generator, rate: int = AUDIO_RATE
) -> np.ndarray:
    """A melodic loop: one note per beat from a pentatonic scale on the base note, harmonics rolling off by
    k^-(2.6 − 2·timbre), a kick on every beat and hi-hat noise on the off-beats scaled by timbre."""
    base = PITCH_RANGE[0] + pitch * (PITCH_RANGE[1] - PITCH_RANGE[0])
    bpm = TEMPO_RANGE[0] + tempo * (TEMPO_RANGE[1] - TEMPO_RANGE[0])
    beat = 60.0 / bpm
    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = np.zeros(n, np.float64)
    scale = np.array([0, 2, 4, 7, 9, 12])
    rolloff = 2.6 - 2.0 * timbre
    for start in np.arange(0.0, seconds, beat):
        i0, i1 = int(start * rate), min(n, int((start + beat) * rate))
        tt = t[i0:i1] - start
        freq = 440.0 * 2 ** ((base + rng.choice(scale) - 69) / 12)
        envelope = np.exp(-tt / (0.35 * beat))
        note = sum(k**-rolloff * np.sin(2 * np.pi * k * freq * tt) for k in range(1, 9) if k * freq < rate / 2)
        out[i0:i1] += 0.5 * envelope * note
        kick = np.sin(2 * np.pi * (50 + 60 * np.exp(-tt / 0.03)) * tt) * np.exp(-tt / 0.08)
        out[i0:i1] += 0.6 * kick
        h0 = int((start + beat / 2) * rate)
        if h0 < n:
            length = min(n - h0, int(0.05 * rate))
            out[h0 : h0 + length] += (
                timbre * 0.3 * rng.standard_normal(length) * np.exp(-np.arange(length) / (0.01 * rate))
            )
    return (0.8 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def render_video(
    pitch: float, tempo: float, timbre: float, seconds: float, size: int, fps: int, rng: np.random.Generator
) -> np.ndarray:
    """uint8 frames (T, size, size, 3) showing the music's factors (see the module docstring) plus nuisance."""
    frames = max(1, int(round(seconds * fps)))
    hue = (HUE_SPAN * pitch + rng.normal(0, 0.025)) % 1.0
    density = (2.0 + 10.0 * tempo) * np.exp(rng.normal(0, 0.08))
    speed = (0.2 + 1.6 * tempo) * np.exp(rng.normal(0, 0.1))
    grain = np.clip(timbre + rng.normal(0, 0.08), 0, 1)
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:size, 0:size] / size
    u = x * np.cos(angle) + y * np.sin(angle)
    cell = max(2, size // 28)
    noise = rng.random((size // cell + 1, size // cell + 1))
    texture = np.kron(noise, np.ones((cell, cell)))[:size, :size]
    disc_hue, disc_r = rng.random(), rng.uniform(0.1, 0.2)
    start, velocity = rng.random(2), rng.normal(0, 0.25, 2)
    brightness = rng.uniform(0.75, 1.0)
    out = np.empty((frames, size, size, 3), np.uint8)
    for f in range(frames):
        time = f / fps
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (density * u - speed * time))
        value = brightness * (0.35 + 0.55 * stripes) * (1 - 0.6 * grain + 1.2 * grain * texture)
        sat = np.full_like(value, 0.85)
        hues = np.full_like(value, hue)
        cx, cy = (start + velocity * time) % 1.0
        disc = (x - cx) ** 2 + (y - cy) ** 2 < disc_r**2
        hues[disc], sat[disc], value[disc] = disc_hue, 0.6, 0.9
        out[f] = (255 * np.clip(_hsv_to_rgb(hues, sat, np.clip(value, 0, 1)), 0, 1)).astype(np.uint8)
    return out


def encode_video(frames: np.ndarray, fps: int, path: Path) -> None:
    """Encode RGB frames to H.264 mp4 with FFmpeg (frames piped as raw video)."""
    n, h, w, _ = frames.shape
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        str(fps),
        "-i",
        "pipe:0",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        str(path),
    ]
    proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not encode {path}: {proc.stderr.decode(errors='replace').strip()}")


def _words(value: float, rng: np.random.Generator, noise: float) -> int:
    level = int(min(2, value * 3))
    if rng.random() < noise:
        level = int(np.clip(level + rng.choice([-1, 1]), 0, 2))
    return level


def describe(pitch: float, tempo: float, language: str, rng: np.random.Generator, noise: float) -> str:
    subject = rng.choice(SUBJECTS[language])
    return (
        f"{subject}: {TEMPO_WORDS[language][_words(tempo, rng, noise)]}, "
        f"{REGISTER_WORDS[language][_words(pitch, rng, noise)]}"
    )


def _popularity(config: SampleMediaConfig, rng: np.random.Generator) -> np.ndarray:
    """Videos per music: a long tail (weights 1/(rank+2)^a over a random order), at least two per music."""
    weights = 1.0 / (rng.permutation(config.n_music) + 2.0) ** config.popularity_exponent
    counts = np.full(config.n_music, 2, np.int64)
    extra = config.n_videos - counts.sum()
    if extra > 0:
        counts += rng.multinomial(extra, weights / weights.sum())
    return counts


@dataclass(frozen=True)
class SamplePlan:
    """The sample before any media is rendered: its manifests and every draw the rendering uses.

    `video_factors` holds the (pitch, tempo, timbre) each video shows: its music's factors (random ones for an
    off-topic video) plus the `visual_noise` jitter, clipped to [0, 1]. A description names the factors the video
    shows before the jitter (`word_noise` aside).
    """

    config: SampleMediaConfig
    latent: dict[str, np.ndarray]
    music: pd.DataFrame
    videos: pd.DataFrame
    music_seconds: np.ndarray
    music_seeds: np.ndarray
    video_factors: np.ndarray
    video_seconds: np.ndarray
    video_seeds: np.ndarray


def plan_sample(params: dict[str, Any] | SampleMediaConfig | None = None) -> SamplePlan:
    """Draw the sample's music, videos, descriptions and per-clip randomness (cheap: nothing is rendered)."""
    config = params if isinstance(params, SampleMediaConfig) else SampleMediaConfig.from_params(params)
    rng = np.random.default_rng(config.seed)
    latent = _latents(config.n_music, rng)
    counts = _popularity(config, rng)
    music_seconds = rng.uniform(config.music_seconds_min, config.music_seconds_max, config.n_music)
    music_seeds = rng.integers(2**31, size=config.n_music)
    owners = rng.permutation(np.repeat(np.arange(config.n_music), counts))
    music_rows = [
        {
            "music_id": f"m{i:03d}",
            "title": f"Sample clip {i}",
            "audio_path": f"music/m{i:03d}.{AUDIO_FORMATS[i % len(AUDIO_FORMATS)][0]}",
        }
        for i in range(config.n_music)
    ]
    factors = np.stack([latent["pitch"], latent["tempo"], latent["timbre"]], axis=1)
    video_rows = []
    video_factors = np.empty((len(owners), 3))
    video_seconds = np.empty(len(owners))
    video_seeds = np.empty(len(owners), np.int64)
    for j, m in enumerate(owners):
        video_rng = np.random.default_rng([config.seed, j])
        # every draw is made for every video, so changing one knob leaves the other videos' draws alone
        off_topic, random_factors = video_rng.random() < config.off_topic_fraction, video_rng.random(3)
        shown = random_factors if off_topic else factors[m]
        description = None
        if video_rng.random() < config.text_fraction:
            language = LANGUAGES[int(video_rng.integers(len(LANGUAGES)))]
            description = describe(shown[0], shown[1], language, video_rng, config.word_noise)
        video_rows.append(
            {
                "video_id": f"v{j:04d}",
                "music_id": f"m{m:03d}",
                "description": description,
                "video_path": f"videos/v{j:04d}.mp4",
            }
        )
        video_seconds[j] = video_rng.uniform(config.video_seconds_min, config.video_seconds_max)
        video_seeds[j] = video_rng.integers(2**31)
        video_factors[j] = np.clip(shown + video_rng.normal(0.0, 1.0, 3) * config.visual_noise, 0.0, 1.0)
    return SamplePlan(
        config,
        latent,
        pd.DataFrame(music_rows),
        pd.DataFrame(video_rows),
        music_seconds,
        music_seeds,
        video_factors,
        video_seconds,
        video_seeds,
    )


def generate_sample_media(out: str | Path, params: dict[str, Any] | SampleMediaConfig | None = None) -> dict[str, Any]:
    """Write the sample data set into OUT (music/, videos/, music.parquet, videos.parquet, sample_media.json)."""
    import soundfile as sf

    plan = plan_sample(params)
    config = plan.config
    out = Path(out)
    (out / "music").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)

    def make_music(i: int) -> None:
        signal = synthesise_music(
            plan.latent["pitch"][i],
            plan.latent["tempo"][i],
            plan.latent["timbre"][i],
            plan.music_seconds[i],
            np.random.default_rng(plan.music_seeds[i]),
        )
        sf.write(
            out / plan.music["audio_path"][i], signal, AUDIO_RATE, subtype=AUDIO_FORMATS[i % len(AUDIO_FORMATS)][1]
        )

    def make_video(j: int) -> None:
        pitch, tempo, timbre = plan.video_factors[j]
        frames = render_video(
            pitch,
            tempo,
            timbre,
            plan.video_seconds[j],
            config.video_size,
            config.video_fps,
            np.random.default_rng(plan.video_seeds[j]),
        )
        encode_video(frames, config.video_fps, out / plan.videos["video_path"][j])

    with ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool:
        list(pool.map(make_music, range(config.n_music)))
        list(pool.map(make_video, range(len(plan.videos))))

    write_manifests(out, plan.music, plan.videos)
    truth = {
        "config": asdict(config),
        "latent": {k: v.round(4).tolist() for k, v in plan.latent.items()},
        "correspondence": {"pitch": "hue", "tempo": "stripe density and speed", "timbre": "texture grain"},
    }
    (out / "sample_media.json").write_text(json.dumps(truth, indent=2) + "\n")
    return {
        "music": config.n_music,
        "videos": len(plan.videos),
        "with_description": int(plan.videos["description"].notna().sum()),
    }
