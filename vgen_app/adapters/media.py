"""Media: probe uploads as real media, and make media with ffmpeg (from `imageio-ffmpeg`).

Blocking (subprocess / decoding): call from a worker thread, never on the event loop.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import imageio_ffmpeg
from av.stream import Disposition


class MediaError(Exception):
    """The file is not acceptable media; `str(exc)` is a message fit for the user."""


@dataclass(frozen=True)
class MediaInfo:
    kind: str  # video | audio | image
    container: str  # e.g. "mp4", "mov", "matroska", "webm", "mp3", "wav", "ogg", "png", "jpeg"
    video_codec: str | None  # e.g. "h264", "vp9", "png", "mjpeg"
    audio_codec: str | None  # e.g. "aac", "mp3", "opus", "pcm_s16le"
    duration_s: float | None  # None for still images
    width: int | None
    height: int | None

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "container": self.container,
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
            "duration_s": self.duration_s,
            "width": self.width,
            "height": self.height,
        }


# Guards: a tiny file may declare a gigantic picture (decompression bomb).
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 4320
FFMPEG_TIMEOUT_S = 600.0

# Demuxers (PyAV `format.name`) we accept; anything else ffmpeg happens to recognise (tty, srt,
# raw streams...) is refused, so a renamed text file never passes as "media".
_CONTAINERS: dict[str, str] = {
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "matroska,webm": "matroska",
    "avi": "avi",
    "mp3": "mp3",
    "wav": "wav",
    "ogg": "ogg",
    "flac": "flac",
    "aac": "aac",
    "png_pipe": "png",
    "jpeg_pipe": "jpeg",
    "webp_pipe": "webp",
    "bmp_pipe": "bmp",
    "image2": "image",
}
_IMAGE_CODECS = {"png", "mjpeg", "webp", "bmp", "tiff", "jpegls"}
_IMAGE_CONTAINERS = {"png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "image2"}
_IMAGE2_NAMES = {"png": "png", "mjpeg": "jpeg", "webp": "webp", "bmp": "bmp", "tiff": "tiff"}


def _container_name(fmt: str, path: Path, codecs: set[str]) -> str:
    ext = path.suffix.lower().lstrip(".")
    if fmt == "mov,mp4,m4a,3gp,3g2,mj2":
        return ext if ext in {"mp4", "mov", "m4a", "3gp"} else "mp4"
    if fmt == "matroska,webm":
        return "webm" if ext == "webm" else "matroska"
    if fmt == "image2":
        return next((_IMAGE2_NAMES[c] for c in codecs if c in _IMAGE2_NAMES), "image")
    return _CONTAINERS[fmt]


def _decode_one(container: av.container.InputContainer, stream: av.stream.Stream) -> bool:
    """True once one frame of `stream` decodes (corrupt data raises, empty data returns False)."""
    for packet in container.demux(stream):
        for _frame in packet.decode():
            return True
    return False


def probe(path: Path) -> MediaInfo:
    """Decode enough of the file to know what it is. Raises MediaError for empty, corrupt or
    non-media files (a renamed text file, an executable, a truncated video)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MediaError("The file could not be read.") from exc
    if size == 0:
        raise MediaError("The file is empty.")
    try:
        container = av.open(str(path), mode="r")
    except Exception as exc:  # PyAV raises many types (InvalidDataError, EOFError, ValueError...)
        raise MediaError(
            "This file is not a media file we can read (or it is damaged or incomplete)."
        ) from exc
    with container:
        return _inspect(container, path)


def _inspect(container: av.container.InputContainer, path: Path) -> MediaInfo:
    fmt = container.format.name
    if fmt not in _CONTAINERS:
        raise MediaError("This file is not a supported video, audio or image format.")
    videos = [
        s
        for s in container.streams.video
        if not (s.disposition & Disposition.attached_pic)  # cover art of a song is not video
    ]
    audios = list(container.streams.audio)
    if not videos and not audios:
        raise MediaError("This file contains no video or audio.")
    video = videos[0] if videos else None
    audio = audios[0] if audios else None
    vcodec = video.codec_context.codec.canonical_name if video else None
    acodec = audio.codec_context.codec.canonical_name if audio else None
    width = height = None
    if video is not None:
        width, height = video.codec_context.width, video.codec_context.height
        if not width or not height:
            raise MediaError(
                "The picture size cannot be read: the file is damaged or far too large."
            )
        if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
            raise MediaError(f"The picture is too large ({width}×{height}); at most {MAX_SIDE}px.")

    is_image = (
        video is not None
        and audio is None
        and vcodec in _IMAGE_CODECS
        and (fmt in _IMAGE_CONTAINERS or (video.frames or 0) <= 1)
    )
    duration = _duration(container)
    if is_image and video is not None:
        # A still image is decoded whole here, so any decoding error means a damaged file: by
        # default ffmpeg conceals them (a JPEG cut at 30% decodes, its missing part grey).
        video.codec_context.options = {"err_detect": "explode"}
    try:
        for stream in (video, audio):
            if stream is not None and not _decode_one(container, stream):
                raise MediaError("The file has no playable content; it looks damaged or empty.")
        if not is_image and duration:
            _check_tail(container, duration)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError("The file is damaged or incomplete and cannot be played.") from exc

    codecs = {c for c in (vcodec, acodec) if c}
    name = _container_name(fmt, path, codecs)
    if is_image:
        return MediaInfo("image", name, vcodec, None, None, width, height)
    if not duration or duration <= 0:
        raise MediaError("The file's duration cannot be determined; it looks damaged.")
    kind = "video" if video is not None else "audio"
    return MediaInfo(kind, name, vcodec, acodec, round(duration, 3), width, height)


def _duration(container: av.container.InputContainer) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    best = 0.0
    for s in container.streams:
        if s.duration and s.time_base:
            best = max(best, float(s.duration * s.time_base))
    return best or None


def _check_tail(container: av.container.InputContainer, duration: float) -> None:
    """A file cut short (an interrupted upload) still opens and decodes its start: demux (no
    decoding) the last second or so and check the packets reach the declared duration."""
    try:
        container.seek(int(max(0.0, duration - 1.0) * av.time_base), backward=True)
    except av.FFmpegError:
        pass  # not seekable (e.g. raw AAC): read on from here, these files are small
    reached: float | None = None
    for packet in container.demux():
        if packet.is_corrupt:
            raise MediaError("The file is incomplete or damaged near its end.")
        if packet.pts is None or packet.time_base is None:
            continue
        end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
        reached = end if reached is None else max(reached, end)
    start = (container.start_time or 0) / av.time_base  # pts may not start at 0 (edit lists, TS)
    if reached is not None and reached - start < duration - (0.5 + duration * 0.01):
        raise MediaError("The file is incomplete: it ends before its declared duration.")


@functools.cache
def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def _encoders() -> str:
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-encoders"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.stdout


def has_encoder(name: str) -> bool:
    return any(
        line.split()[1:2] == [name] for line in _encoders().splitlines() if line.startswith(" ")
    )


def _video_codec_args() -> list[str]:
    if has_encoder("libx264"):
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
    return ["-c:v", "mpeg4", "-q:v", "5", "-pix_fmt", "yuv420p"]


_AUDIO_ARGS = ["-c:a", "aac", "-b:a", "128k"]
_EVEN = "scale=trunc(iw/2)*2:trunc(ih/2)*2"


_MP4_OUT = ["-movflags", "+faststart", "-f", "mp4"]


def _run_ffmpeg(args: list[str], out: Path, output: list[str] = _MP4_OUT) -> None:
    """Run ffmpeg writing to a temporary file beside `out`, then rename: no half-written output."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    cmd += [*output, str(tmp)]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=FFMPEG_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise MediaError(
            f"ffmpeg took longer than {FFMPEG_TIMEOUT_S:.0f} s and was stopped."
        ) from exc
    if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        tail = proc.stderr.decode("utf-8", "replace").strip()[-800:]
        raise MediaError(f"ffmpeg failed (exit {proc.returncode}): {tail or 'no output'}")
    os.replace(tmp, out)


def _audio_duration(audio: Path) -> float:
    info = probe(audio)
    if info.audio_codec is None or not info.duration_s:
        raise MediaError("The audio file has no sound track.")
    return info.duration_s


def make_lipsync(video: Path, audio: Path, out: Path) -> None:
    """The video with the audio laid over it, cut to the audio's length (video looped if shorter). MP4 H.264/AAC."""
    duration = _audio_duration(audio)
    args = ["-stream_loop", "-1", "-i", str(video), "-i", str(audio)]
    args += ["-map", "0:v:0", "-map", "1:a:0", "-vf", _EVEN]
    args += [*_video_codec_args(), *_AUDIO_ARGS, "-t", f"{duration:.3f}", "-shortest"]
    _run_ffmpeg(args, out)


def make_faceswap(video: Path, image: Path, out: Path) -> None:
    """The image overlaid on the video (e.g. scaled to ~1/3 height, centred), original audio kept if any. MP4."""
    info = probe(video)
    if info.kind != "video" or not info.height or not info.duration_s:
        raise MediaError("The video file has no moving picture.")
    face_h = max(2, (info.height // 3) // 2 * 2)
    graph = (
        f"[1:v]scale=-2:{face_h}[face];"
        f"[0:v][face]overlay=(W-w)/2:(H-h)/2:eof_action=repeat,{_EVEN},format=yuv420p[v]"
    )
    args = ["-i", str(video), "-i", str(image), "-filter_complex", graph]
    args += ["-map", "[v]", "-map", "0:a:0?", *_video_codec_args(), *_AUDIO_ARGS]
    args += ["-t", f"{info.duration_s:.3f}"]
    _run_ffmpeg(args, out)


def make_talking_photo(image: Path, audio: Path, out: Path) -> None:
    """The still image as a video for the audio's duration, with the audio. MP4 H.264/AAC."""
    duration = _audio_duration(audio)
    args = ["-loop", "1", "-framerate", "25", "-i", str(image), "-i", str(audio)]
    args += ["-map", "0:v:0", "-map", "1:a:0", "-vf", f"{_EVEN},format=yuv420p"]
    args += [*_video_codec_args(), *_AUDIO_ARGS, "-t", f"{duration:.3f}", "-shortest"]
    _run_ffmpeg(args, out)


def make_poster(video: Path, out: Path) -> None:
    """A JPEG frame of the video (a representative one of its first second), at most 640 px wide."""
    args = ["-i", str(video), "-map", "0:v:0", "-vf", "thumbnail=25,scale='min(640,iw)':-2"]
    args += ["-frames:v", "1", "-q:v", "4"]
    _run_ffmpeg(args, out, ["-f", "image2", "-c:v", "mjpeg"])
