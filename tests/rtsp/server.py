#!/usr/bin/python3
"""A test camera: GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0).

Run with Debian's /usr/bin/python3 (python3-gi lives there). Prints one line
`READY rtsp://127.0.0.1:PORT/cam` on stdout once it listens; tests wait for it.

Sources (--source):
  live     videotestsrc is-live, encoded on the fly, endless (default)
  clip     a pre-encoded finite clip, played once from its start for each client, paced in
           real time: every client receives exactly --frames frames with RTP timestamps
           1/fps apart (the "frames sent" the recorder tests compare against)
Codecs (--codec): h264 (default), h265 (needs x265enc), jpeg (a non-H.264 camera).

Signals: SIGUSR1 drops every client (the camera "goes away" without closing its port);
SIGTERM/SIGINT stop the server. `kill -STOP`/`-CONT` stall it without closing anything.

Digest authentication: --user U --password P (only that user may play).

--clock-rate R runs the media pipelines on a clock calibrated to go R times as fast as the
system's (1.02: a camera whose clock is 2 % fast): a live source then sends R times the frames
per second of real time, each still stamped 1/fps apart in media time.
"""

import argparse
import os
import signal
import sys
import tempfile

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, GObject, Gst, GstRtsp, GstRtspServer  # noqa: E402


def encoder(codec, fps):
    if codec == "h264":
        return (
            f"x264enc key-int-max={fps} bframes=0 speed-preset=ultrafast tune=zerolatency "
            "byte-stream=true ! video/x-h264,profile=main ! h264parse"
        )
    if codec == "h265":
        return f"x265enc key-int-max={fps} speed-preset=ultrafast tune=zerolatency ! h265parse"
    return "jpegenc"


def payloader(codec):
    return {
        "h264": "rtph264pay name=pay0 pt=96 config-interval=-1",
        "h265": "rtph265pay name=pay0 pt=96 config-interval=-1",
        "jpeg": "rtpjpegpay name=pay0 pt=26",
    }[codec]


def raw(args):
    w, h = args.size.split("x")
    return f"video/x-raw,width={w},height={h},framerate={args.fps}/1,format=I420"


def make_clip(args, path):
    """Encodes --frames frames into a Matroska clip (runs to EOS before serving)."""
    desc = (
        f"videotestsrc num-buffers={args.frames} pattern=ball ! {raw(args)} ! "
        f"{encoder(args.codec, args.fps)} ! matroskamux ! filesink location={path}"
    )
    pipeline = Gst.parse_launch(desc)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        sys.exit(f"cannot encode the clip: {msg.parse_error() if msg else 'timeout'}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--source", choices=["live", "clip"], default="live")
    p.add_argument("--codec", choices=["h264", "h265", "jpeg"], default="h264")
    p.add_argument("--frames", type=int, default=750, help="clip length in frames")
    p.add_argument("--clip", help="serve this Matroska H.264 file instead of encoding one")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", default="320x240")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--shared", action="store_true", help="one pipeline for all clients")
    p.add_argument("--clock-rate", type=float, help="the pipelines' clock rate (1.02: 2 %% fast)")
    args = p.parse_args()

    Gst.init(None)
    tmp = None
    if args.source == "clip":
        clip = args.clip
        if clip is None:
            tmp = tempfile.NamedTemporaryFile(suffix=".mkv", delete=False)
            tmp.close()
            clip = tmp.name
            make_clip(args, clip)
        parse = {"h264": "h264parse", "h265": "h265parse", "jpeg": "jpegparse"}[args.codec]
        launch = f"filesrc location={clip} ! matroskademux ! {parse} ! {payloader(args.codec)}"
    else:
        launch = (
            f"videotestsrc is-live=true pattern=ball ! {raw(args)} ! "
            f"{encoder(args.codec, args.fps)} ! {payloader(args.codec)}"
        )

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {launch} )")
    factory.set_shared(args.shared)
    if args.clock_rate:
        clock = GObject.new(Gst.SystemClock)
        now = clock.get_internal_time()
        clock.set_calibration(now, now, round(args.clock_rate * 1_000_000), 1_000_000)
        # The factory's own set_clock does not reach the pipeline here; each media's does.
        factory.connect("media-configure", lambda _f, media: media.set_clock(clock))
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        auth.add_digest(args.user, args.password or "", token)
        server.set_auth(auth)
        factory.add_role_from_structure(
            Gst.Structure.new_from_string(
                f"{args.user}, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"
            )
        )
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit("cannot listen")

    loop = GLib.MainLoop()

    def drop_clients():
        server.client_filter(lambda _s, _c: GstRtspServer.RTSPFilterResult.REMOVE)
        print("DROPPED", flush=True)
        return GLib.SOURCE_CONTINUE

    def stop():
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, drop_clients)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}/cam", flush=True)
    try:
        loop.run()
    finally:
        if tmp is not None:
            os.unlink(tmp.name)


if __name__ == "__main__":
    main()
