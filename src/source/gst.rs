//! Frames from a GStreamer pipeline: a camera (`nvarguscamerasrc` on a Jetson, `v4l2src`), an RTSP
//! stream, or a video file (`filesrc ! decodebin`).
//!
//! jetlink runs `gst-launch-1.0` as a child process and reads raw frames from its standard output
//! (`… ! videoconvert ! videoscale ! video/x-raw,format=GRAY8|RGB,width=W,height=H ! fdsink fd=1`)
//! instead of linking the `gstreamer` crates. Why: those crates link libgstreamer at build time
//! (pkg-config and the -dev packages for the target), which the aarch64 cross build with the
//! glibc 2.31 floor (cargo-zigbuild) cannot provide without a JetPack sysroot; a child process
//! needs nothing at build time, runs against JetPack's own GStreamer with NVIDIA's plugins
//! (`nvarguscamerasrc`, `nvvidconv`), and a crashing pipeline cannot take the loop down with it.
//! The cost is one copy of each frame through a pipe, small against inference.
//!
//! A producer thread reads frames into a [`FramePool`]. Live pipelines (cameras, RTSP) drop the
//! oldest frame when the loop is slow and are restarted with exponential backoff when they fail
//! (or stall: the source stops a pipeline that gives no frame for `STALL_WAITS` waits);
//! a pipeline that fails before its first frame (the camera is not there) ends the source with the
//! reason. File pipelines deliver every frame and end at the end of the file.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pool::FramePool;
use crate::view::Shape;

/// The `gst-launch-1.0` program (overridable with `JETLINK_GST_LAUNCH`; empty is unset).
pub fn launcher() -> String {
    // Set but empty counts as unset.
    std::env::var("JETLINK_GST_LAUNCH")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "gst-launch-1.0".into())
}

/// The caps every pipeline is converted to: the stream's format and size.
pub fn sink_caps(shape: Shape) -> String {
    let format = if shape.c == 3 { "RGB" } else { "GRAY8" };
    format!("videoconvert ! videoscale ! video/x-raw,format={format},width={},height={}", shape.w, shape.h)
}

/// The whole `gst-launch-1.0` pipeline description for a user pipeline.
pub fn full_pipeline(user: &str, shape: Shape) -> String {
    format!("{user} ! {} ! fdsink fd=1", sink_caps(shape))
}

/// A user pipeline for a video file.
pub fn file_pipeline(path: &std::path::Path) -> String {
    let p = path.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    format!("filesrc location=\"{p}\" ! decodebin")
}

/// Bytes per row in GStreamer's raw video: rows are padded to 4 bytes.
pub fn row_stride(shape: Shape) -> usize {
    (shape.w * shape.c).div_ceil(4) * 4
}

/// Why the producer stopped, when it stopped for a reason (read by the driver after the run).
pub type Failure = Arc<Mutex<Option<String>>>;

/// The running `gst-launch-1.0` child's process id, while it has not been reaped: the source kills
/// it when it ends (a pipeline that never writes would otherwise keep the producer thread, and the
/// process, waiting on its pipe forever). Cleared under the lock before the child is reaped, so a
/// kill never reaches a reused id.
pub type ChildPid = Arc<Mutex<Option<u32>>>;

/// Kill the child `pid` holds, if any, and its process group (SIGKILL; the producer reaps it).
pub fn kill_child(pid: &ChildPid) {
    if let Some(p) = *pid.lock().unwrap_or_else(|e| e.into_inner()) {
        // SAFETY: kill(2) on a child that has not been reaped (its id, which is also its process
        // group's, cannot have been reused).
        unsafe { libc::kill(-(p as libc::pid_t), libc::SIGKILL) };
    }
}

fn start(user: &str, shape: Shape) -> std::io::Result<Child> {
    let desc = full_pipeline(user, shape);
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(launcher());
    // Its own process group, so that stopping it stops whatever it started too (a wrapper
    // script's children would otherwise keep the pipe open); the terminal's Ctrl-C then reaches
    // jetlink alone, so the child is also told to die with the thread that started it (the
    // producer, which reaps it before it ends), for a process killed without cleaning up.
    cmd.process_group(0);
    // SAFETY: prctl(2) is async-signal-safe, as a pre_exec hook requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.arg("-q")
        .args(split_pipeline(&desc))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// gst-launch joins its arguments with spaces and parses the result; passing the description as
/// words keeps quoted strings intact.
fn split_pipeline(desc: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for ch in desc.chars() {
        match ch {
            _ if escaped => {
                cur.push(ch);
                escaped = false;
            }
            '\\' => {
                cur.push(ch);
                escaped = true;
            }
            '"' => {
                cur.push(ch);
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Read frames from one run of the pipeline until it ends. Returns (frames read, stderr text).
fn pump(child: &mut Child, pid: &ChildPid, shape: Shape, pool: &FramePool, next: &mut u32) -> (u64, String) {
    let stride = row_stride(shape);
    let row = shape.w * shape.c;
    let (mut raw, mut frame) = (vec![0u8; stride * shape.h], vec![0u8; shape.len()]);
    let mut count = 0u64;
    if let Some(out) = child.stdout.as_mut() {
        while out.read_exact(&mut raw).is_ok() {
            for y in 0..shape.h {
                frame[y * row..(y + 1) * row].copy_from_slice(&raw[y * stride..y * stride + row]);
            }
            if !pool.push(*next, &frame) {
                let _ = child.kill();
                break;
            }
            *next += 1;
            count += 1;
        }
    }
    kill_child(pid);
    *pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(e) = child.stderr.as_mut() {
        let _ = e.read_to_string(&mut err);
    }
    (count, err)
}

/// Start the producer for `user` (a pipeline without the sink). Frames are numbered from `first`.
pub fn spawn(
    user: String,
    shape: Shape,
    first: u32,
    pool: FramePool,
    failure: Failure,
    pid: ChildPid,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = first;
        let mut backoff = Duration::from_millis(100);
        let mut delivered_any = false;
        loop {
            if pool.is_closed() {
                return;
            }
            let outcome = match start(&user, shape) {
                Ok(mut child) => {
                    *pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(child.id());
                    // The source may have ended while the child started (its kill found no id
                    // yet): stop it now rather than read a pipe that may never be written.
                    if pool.is_closed() {
                        kill_child(&pid);
                    }
                    pump(&mut child, &pid, shape, &pool, &mut next)
                }
                Err(e) => (0, format!("cannot start {}: {e}", launcher())),
            };
            delivered_any |= outcome.0 > 0;
            if pool.is_closed() {
                return;
            }
            let reason = outcome.1.trim().to_string();
            if !pool.is_live() || !delivered_any {
                // A file ended, or a live source was never there: end with the reason.
                if !(delivered_any && reason.is_empty()) {
                    let what =
                        if delivered_any { "the pipeline failed" } else { "the pipeline gave no frame" };
                    let msg = if reason.is_empty() { what.to_string() } else { format!("{what}: {reason}") };
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                }
                pool.close();
                return;
            }
            // A camera that failed mid-run: report it and retry with backoff.
            let why = if reason.is_empty() { "it ended or was stopped" } else { reason.as_str() };
            log::warn!("frame source failed ({why}); retrying in {backoff:?}");
            pool.set_down(true);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_words_keep_quotes() {
        let p =
            full_pipeline(&file_pipeline(std::path::Path::new("/tmp/a b.mkv")), Shape { h: 28, w: 30, c: 1 });
        let w = split_pipeline(&p);
        assert_eq!(w[0], "filesrc");
        assert_eq!(w[1], "location=\"/tmp/a b.mkv\"");
        assert!(p.ends_with("video/x-raw,format=GRAY8,width=30,height=28 ! fdsink fd=1"), "{p}");
        assert_eq!(row_stride(Shape { h: 1, w: 30, c: 1 }), 32);
        assert_eq!(row_stride(Shape { h: 1, w: 28, c: 3 }), 84);
    }
}
