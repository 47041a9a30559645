"""Make the example clips and posters of the landing's gallery with the bundled ffmpeg.

The clips are honest placeholders, drawn from scratch by ffmpeg's `geq` filter: a cartoon person
whose mouth follows a speech-like rhythm (lip sync), whose face is wiped over by another one (face
swap), or who speaks from a framed portrait (talking photo). Each is captioned "vgen sample". No
footage of anyone is used. Replace them with real generated deeps by dropping files next to them
and editing `landing/data/examples.toml`.

The output is committed under `landing/static/examples/`; the site build needs no ffmpeg.

    .venv/bin/python -m landing.tools.make_samples                    # (re)make all of them
    .venv/bin/python -m landing.tools.make_samples --only lipsync-explainer

Each clip: H.264 (yuv420p, +faststart), 640x360, 24 fps, 4 s, no audio, at most ~150 KB;
each poster: a WebP still of the same size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg

OUT = Path(__file__).resolve().parents[1] / "static" / "examples"
W, H = 640, 360
FPS = 24
SECONDS = 4.0
MAX_BYTES = 150_000
FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
)

RGB = tuple[int, int, int]
Paint = RGB | tuple[RGB, RGB]  # one colour, or (before, after) the face-swap wipe


def hex_rgb(value: str) -> RGB:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def shade(paint: Paint, k: float) -> Paint:
    if isinstance(paint[0], tuple):
        return tuple(shade(c, k) for c in paint)  # type: ignore[return-value,arg-type]
    return tuple(int(v * k) for v in paint)  # type: ignore[return-value,union-attr]


# --- shapes: an alpha expression in X, Y, T (0..1, ~1.5 px anti-aliased edge) + where it can be > 0


@dataclass(frozen=True)
class Layer:
    alpha: str
    box: tuple[float, float, float, float]
    paint: Paint = (0, 0, 0)

    def fill(self, paint: Paint) -> Layer:
        return Layer(self.alpha, self.box, paint)

    def clipped(self, other: Layer) -> Layer:
        (a0, b0, a1, b1), (c0, d0, c1, d1) = self.box, other.box
        box = (max(a0, c0), max(b0, d0), min(a1, c1), min(b1, d1))
        return Layer(f"({self.alpha})*({other.alpha})", box, self.paint)


def ellipse(cx: float, cy: float, rx: float, ry: float, ry_expr: str = "") -> Layer:
    """An ellipse; `ry_expr` (never above `ry`) animates its height."""
    edge = min(rx, ry, 40) / 1.5
    alpha = f"clip((1-hypot((X-{cx:.1f})/{rx:.1f},(Y-{cy:.1f})/({ry_expr or f'{ry:.1f}'})))*{edge:.2f},0,1)"
    return Layer(alpha, (cx - rx - 2, cy - ry - 2, cx + rx + 2, cy + ry + 2))


def rect(x0: float, y0: float, x1: float, y1: float) -> Layer:
    alpha = f"clip(min(min(X-{x0},{x1}-X),min(Y-{y0},{y1}-Y)),0,1)"
    return Layer(alpha, (x0, y0, x1, y1))


@dataclass(frozen=True)
class Person:
    cx: float
    cy: float = 170
    size: float = 78  # head half-height
    skin: Paint = (236, 188, 160)
    hair: Paint = (60, 40, 32)
    shirt: Paint = (30, 41, 59)
    talk: float = 9.0  # mouth rhythm

    def layers(self) -> list[Layer]:
        cx, cy, r = self.cx, self.cy, self.size
        rx = r * 0.8
        blink = "if(lt(mod(T+0.4,3.1),0.14),0.15,1)"
        mouth_max = r * 0.16 + 1.5
        speech = f"(1.5+{r * 0.16:.1f}*abs(sin(T*{self.talk})*sin(T*{self.talk / 3.7:.2f}+0.6)))"
        eye_y, eye_dx = cy - r * 0.12, rx * 0.38
        dark = (28, 25, 23)
        return [
            ellipse(cx, cy + r * 2.05, r * 1.55, r * 1.05).fill(self.shirt),
            ellipse(cx, cy + r * 0.95, rx * 0.38, r * 0.5).fill(shade(self.skin, 0.85)),
            ellipse(cx, cy - r * 0.12, rx * 1.14, r * 1.06).fill(self.hair),
            ellipse(cx, cy, rx, r).fill(self.skin),
            ellipse(cx, cy - r * 0.78, rx * 0.92, r * 0.36).fill(self.hair),
            ellipse(cx - eye_dx, eye_y, 7, 7, f"7*{blink}").fill(dark),
            ellipse(cx + eye_dx, eye_y, 7, 7, f"7*{blink}").fill(dark),
            ellipse(cx, cy + r * 0.45, rx * 0.3, mouth_max, speech).fill((120, 30, 45)),
        ]


def slide_board(x0: float, y0: float, x1: float, y1: float) -> list[Layer]:
    lines = [
        rect(x0 + 24, y0 + 28 + i * 30, x1 - 24 - (i % 3) * 40, y0 + 40 + i * 30).fill(
            (148, 163, 184)
        )
        for i in range(5)
    ]
    return [rect(x0, y0, x1, y1).fill((248, 250, 252)), *lines]


def portrait(
    x0: float, y0: float, x1: float, y1: float, frame: RGB, inner: RGB, *people: Person
) -> list[Layer]:
    window = rect(x0 + 14, y0 + 14, x1 - 14, y1 - 14)
    return [
        rect(x0, y0, x1, y1).fill(frame),
        window.fill(inner),
        *(layer.clipped(window) for person in people for layer in person.layers()),
    ]


def crown(cx: float, top: float, paint: Paint) -> list[Layer]:
    points = [ellipse(cx + dx, top + 4, 9, 16).fill(paint) for dx in (-34, 0, 34)]
    return [*points, rect(cx - 44, top + 8, cx + 44, top + 34).fill(paint)]


@dataclass(frozen=True)
class Sample:
    name: str
    label: str  # drawn on the clip
    bg: tuple[RGB, RGB]  # left → right gradient
    layers: list[Layer] = field(default_factory=list)
    wipe: bool = False  # face swap: the second colours sweep in from the left
    crf: int = 26
    poster_at: float = 2.2  # face swaps: 1.75 s, mid-wipe


def channel(sample: Sample, c: int) -> str:
    """One colour channel as a flat sequence: register 1 holds the colour, register 0 the alpha."""
    a, b = sample.bg[0][c], sample.bg[1][c]
    steps = [f"st(1,{a}+({b - a})*(X/W+0.08*sin(T*0.8+Y/90)))"]
    wipe = f"lt(X,W*clip((T-0.6)/{SECONDS - 1.6},0,1))"
    for layer in sample.layers:
        paint = layer.paint
        if isinstance(paint[0], tuple):
            before, after = paint  # type: ignore[misc]
            value = f"if({wipe},{after[c]},{before[c]})" if sample.wipe else str(before[c])
        else:
            value = str(paint[c])
        x0, y0, x1, y1 = layer.box
        inside = f"between(X,{x0:.0f},{x1:.0f})*between(Y,{y0:.0f},{y1:.0f})"
        steps.append(f"if({inside},st(0,{layer.alpha});st(1,ld(1)*(1-ld(0))+{value}*ld(0)),0)")
    steps.append("ld(1)")
    return ";".join(steps)


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "lipsync-explainer",
        "Lip sync",
        (hex_rgb("4f46e5"), hex_rgb("ec4899")),
        Person(cx=320).layers(),
    ),
    Sample(
        "lipsync-course",
        "Lip sync",
        (hex_rgb("0f172a"), hex_rgb("1e3a8a")),
        [
            *slide_board(330, 50, 600, 250),
            *Person(
                cx=180, skin=(198, 134, 100), hair=(20, 20, 24), shirt=(13, 148, 136), talk=11
            ).layers(),
        ],
    ),
    Sample(
        "lipsync-podcast",
        "Lip sync",
        (hex_rgb("111827"), hex_rgb("7c2d12")),
        [
            *Person(
                cx=300, skin=(241, 200, 170), hair=(180, 83, 9), shirt=(67, 56, 202), talk=8
            ).layers(),
            rect(423, 210, 433, 330).fill((75, 85, 99)),
            ellipse(428, 196, 20, 30).fill((31, 41, 55)),
        ],
    ),
    Sample(
        "faceswap-party",
        "Face swap",
        (hex_rgb("f59e0b"), hex_rgb("db2777")),
        Person(
            cx=320,
            skin=((236, 188, 160), (141, 85, 60)),
            hair=((60, 40, 32), (15, 15, 15)),
            shirt=(124, 58, 237),
        ).layers(),
        wipe=True,
        poster_at=1.75,
    ),
    Sample(
        "faceswap-mascot",
        "Face swap",
        (hex_rgb("065f46"), hex_rgb("0ea5e9")),
        [
            ellipse(262, 96, 24, 24).fill(((120, 72, 40), (250, 250, 250))),
            ellipse(378, 96, 24, 24).fill(((120, 72, 40), (250, 250, 250))),
            *Person(
                cx=320,
                skin=((214, 160, 100), (236, 200, 170)),
                hair=((120, 72, 40), (90, 60, 40)),
                shirt=(234, 88, 12),
                talk=7,
            ).layers(),
        ],
        wipe=True,
        poster_at=1.75,
    ),
    Sample(
        "faceswap-costume",
        "Face swap",
        (hex_rgb("7f1d1d"), hex_rgb("4c1d95")),
        [
            *Person(
                cx=320,
                skin=((250, 214, 190), (190, 120, 90)),
                hair=((30, 27, 75), (68, 64, 60)),
                shirt=(190, 18, 60),
                talk=8,
            ).layers(),
            *crown(320, 54, ((250, 204, 21), (250, 204, 21))),
        ],
        wipe=True,
        poster_at=1.75,
    ),
    Sample(
        "talkingphoto-headshot",
        "Talking photo",
        (hex_rgb("e2e8f0"), hex_rgb("94a3b8")),
        portrait(
            190,
            24,
            450,
            336,
            (255, 255, 255),
            (186, 230, 253),
            Person(cx=320, cy=165, size=70, shirt=(30, 64, 175), talk=10),
        ),
    ),
    Sample(
        "talkingphoto-storyteller",
        "Talking photo",
        (hex_rgb("292524"), hex_rgb("57534e")),
        portrait(
            200,
            20,
            440,
            340,
            (180, 140, 60),
            (120, 53, 15),
            Person(
                cx=320,
                cy=170,
                size=68,
                skin=(233, 196, 150),
                hair=(230, 230, 225),
                shirt=(20, 83, 45),
                talk=6,
            ),
        ),
    ),
    Sample(
        "talkingphoto-greeting",
        "Talking photo",
        (hex_rgb("166534"), hex_rgb("b91c1c")),
        portrait(
            150,
            26,
            490,
            334,
            (255, 255, 255),
            (254, 243, 199),
            Person(cx=260, cy=180, size=56, hair=(120, 53, 15), shirt=(29, 78, 216), talk=0.0001),
            Person(
                cx=380,
                cy=176,
                size=60,
                skin=(224, 172, 130),
                hair=(200, 200, 200),
                shirt=(190, 18, 60),
                talk=7,
            ),
        ),
    ),
)


def ffmpeg(*args: str) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    subprocess.run([*cmd, *args], check=True, stdin=subprocess.DEVNULL, timeout=900)


def caption_filters(sample: Sample) -> list[str]:
    fontfile = next((f for f in FONTS if Path(f).exists()), None)
    if fontfile is None:  # the clip is still fine without its caption
        return []
    common = f"fontfile={fontfile}:fontcolor=white:shadowcolor=black@0.6:shadowx=1:shadowy=1"
    return [
        "drawbox=x=0:y=ih-52:w=iw:h=52:color=black@0.4:t=fill",
        f"drawtext={common}:fontsize=22:x=20:y=h-38:text='{sample.label}'",
        f"drawtext={common}:fontsize=15:x=w-tw-20:y=h-34:text='vgen sample'",
    ]


def make_poster(sample: Sample, video: Path, poster: Path) -> None:
    # Quality 50 keeps these flat-colour frames clean at ~3.7 KB each: the home page shows nine of
    # them and must stay under 50 KB without its videos (bench/lighthouse_landing.py).
    ffmpeg(
        *("-ss", str(sample.poster_at), "-i", str(video), "-frames:v", "1"),
        *("-c:v", "libwebp", "-quality", "50", "-compression_level", "6", "-map_metadata", "-1"),
        str(poster),
    )


def make(sample: Sample, posters_only: bool = False) -> tuple[Path, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    video = OUT / f"{sample.name}.mp4"
    poster = OUT / f"{sample.name}.webp"
    if posters_only:
        make_poster(sample, video, poster)
        return video, poster
    geq = "geq=" + ":".join(f"{ch}='{channel(sample, i)}'" for i, ch in enumerate("rgb"))
    graph = ",".join(["format=rgb24", geq, *caption_filters(sample), "format=yuv420p"])
    crf = sample.crf
    while True:
        ffmpeg(
            *("-f", "lavfi", "-i", f"color=black:size={W}x{H}:rate={FPS}:duration={SECONDS}"),
            *("-vf", graph, "-an"),
            *("-c:v", "libx264", "-preset", "slow", "-crf", str(crf), "-profile:v", "high"),
            *("-pix_fmt", "yuv420p", "-movflags", "+faststart", "-map_metadata", "-1"),
            str(video),
        )
        if video.stat().st_size <= MAX_BYTES or crf >= 45:
            break
        crf += 3
    make_poster(sample, video, poster)
    return video, poster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="make only this sample (repeatable)")
    parser.add_argument("--jobs", type=int, default=4, help="samples made at once")
    parser.add_argument("--posters", action="store_true", help="only re-make the posters")
    args = parser.parse_args(argv)
    chosen = [s for s in SAMPLES if not args.only or s.name in args.only]
    if not chosen:
        parser.error(f"no such sample; known: {', '.join(s.name for s in SAMPLES)}")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        made = list(pool.map(lambda s: make(s, args.posters), chosen))
    total = 0
    for sample, (video, poster) in zip(chosen, made, strict=True):
        v, p = video.stat().st_size, poster.stat().st_size
        total += v + p
        print(f"{sample.name}: {v:>7,} B mp4 + {p:>6,} B webp")
    print(f"total {total:,} B in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
