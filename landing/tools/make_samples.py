"""Make the example clips and posters of the landing's gallery with the bundled ffmpeg.

The clips are honest placeholders: abstract patterns from ffmpeg's own generators (lavfi), each
labelled "vgen sample", so the gallery has real, small, license-free videos until real generated
deeps replace them. The output is committed under `landing/static/examples/`; the build itself
needs no ffmpeg.

    .venv/bin/python -m landing.tools.make_samples            # (re)make all of them
    .venv/bin/python -m landing.tools.make_samples --only lipsync-explainer

Each clip: H.264 (yuv420p, +faststart), 640x360, 24 fps, a few seconds, no audio, ≤ ~150 KB;
each poster: a WebP still of the same size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

OUT = Path(__file__).resolve().parents[1] / "static" / "examples"
SIZE = "640x360"
FPS = 24
MAX_BYTES = 150_000
FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
)


@dataclass(frozen=True)
class Sample:
    name: str
    label: str  # drawn on the clip
    source: str  # a lavfi source graph producing SIZE at FPS
    post: str = ""  # extra filters after the source
    seconds: float = 4.0
    crf: int = 30
    poster_at: float = 1.5


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "lipsync-explainer",
        "Lip sync",
        f"testsrc2=size={SIZE}:rate={FPS}",
        "hue=s=0.6",
        crf=32,
    ),
    Sample(
        "lipsync-course",
        "Lip sync",
        f"gradients=size={SIZE}:rate={FPS}:c0=0x4f46e5:c1=0xec4899:c2=0x0ea5e9:nb_colors=3:speed=0.03",
        crf=28,
    ),
    Sample(
        "lipsync-podcast",
        "Lip sync",
        f"cellauto=size={SIZE}:rate={FPS}:rule=110:scroll=1",
        "format=gray,format=yuv420p,lutrgb=r=val*0.35:g=val*0.45:b=val",
        crf=34,
    ),
    Sample(
        "faceswap-party",
        "Face swap",
        f"mandelbrot=size={SIZE}:rate={FPS}:start_scale=2.5:end_scale=0.6:end_pts=8",
        crf=34,
    ),
    Sample(
        "faceswap-mascot",
        "Face swap",
        f"life=size=320x180:rate={FPS}:mold=10:ratio=0.1:death_color=#1e1b4b:life_color=#f472b6",
        f"scale={SIZE}:flags=neighbor",
        crf=33,
    ),
    Sample(
        "talkingphoto-headshot",
        "Talking photo",
        f"gradients=size={SIZE}:rate={FPS}:c0=0x0f766e:c1=0xfacc15:type=radial:speed=0.05",
        crf=28,
    ),
    Sample(
        "talkingphoto-storyteller",
        "Talking photo",
        f"testsrc2=size={SIZE}:rate={FPS}",
        "hue=H=t*0.8:s=0.8,boxblur=2:1",
        crf=32,
    ),
)


def ffmpeg(*args: str) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    subprocess.run([*cmd, *args], check=True, stdin=subprocess.DEVNULL, timeout=300)


def font() -> str | None:
    return next((f for f in FONTS if Path(f).exists()), None)


def label_filters(sample: Sample) -> list[str]:
    fontfile = font()
    if fontfile is None:  # the clip is still fine without its caption
        return []
    common = f"fontfile={fontfile}:fontcolor=white:shadowcolor=black@0.6:shadowx=2:shadowy=2"
    return [
        f"drawbox=x=0:y=ih-64:w=iw:h=64:color=black@0.45:t=fill",
        f"drawtext={common}:fontsize=26:x=24:y=h-50:text='{sample.label}'",
        f"drawtext={common}:fontsize=18:x=w-tw-24:y=h-44:text='vgen sample'",
    ]


def make(sample: Sample) -> tuple[Path, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    video = OUT / f"{sample.name}.mp4"
    poster = OUT / f"{sample.name}.webp"
    filters = [f for f in (sample.post, *label_filters(sample), "format=yuv420p") if f]
    graph = ",".join(filters)
    crf = sample.crf
    while True:
        ffmpeg(
            *("-f", "lavfi", "-i", sample.source),
            *("-t", str(sample.seconds), "-vf", graph, "-an"),
            *("-c:v", "libx264", "-preset", "veryslow", "-crf", str(crf), "-profile:v", "high"),
            *("-pix_fmt", "yuv420p", "-movflags", "+faststart", "-map_metadata", "-1"),
            str(video),
        )
        if video.stat().st_size <= MAX_BYTES or crf >= 45:
            break
        crf += 2
    ffmpeg(
        *("-ss", str(sample.poster_at), "-i", str(video), "-frames:v", "1"),
        *("-c:v", "libwebp", "-quality", "70", "-compression_level", "6", "-map_metadata", "-1"),
        str(poster),
    )
    return video, poster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="make only this sample (repeatable)")
    args = parser.parse_args(argv)
    chosen = [s for s in SAMPLES if not args.only or s.name in args.only]
    if not chosen:
        parser.error(f"no such sample; known: {', '.join(s.name for s in SAMPLES)}")
    total = 0
    for sample in chosen:
        video, poster = make(sample)
        size = video.stat().st_size + poster.stat().st_size
        total += size
        print(f"{sample.name}: {video.stat().st_size:>7,} B mp4 + {poster.stat().st_size:>6,} B webp")
    print(f"total {total:,} B in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
