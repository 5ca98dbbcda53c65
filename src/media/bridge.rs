//! An HDMI bridge made ready before every capture: the EDID given (a source sends nothing to a
//! bridge without one, and a bridge forgets it whenever its driver is loaded again), the
//! source's timings queried and set, and, where the capture is a media-controller pipeline
//! (the Pi 5's RP1 CFE), the pipeline configured for those timings.
//!
//! Where the ioctls go: the Pi 4's unicam in video-node mode (what the `tc358743` overlay
//! selects) and vivid pass them from the capture node to the bridge, so they go to the
//! capture node, on its current input. The Pi 5's `rp1-cfe` capture node does not: they go to
//! the bridge's own subdev node (`/dev/v4l-subdevN`, pad 0), found by its name (`tc358743
//! 4-000f`) among the subdevs of the capture node's media graph, and the graph's links and
//! formats are set with `media-ctl` (v4l-utils), as Raspberry Pi documents for the bridge:
//! bridge pad 0, `csi2` pads 0 and 4 at the timing's size in UYVY8_1X16, `csi2:4` linked to the
//! capture node's entity. The capture then must ask for exactly that size and format
//! ([`Pin`]). The Pi 5 path is written to that interface and has not run on a Pi 5.
//!
//! Blocking (ioctls, `media-ctl`): call it off the async threads.

use super::health::Cause;
use super::v4l2::{self, EdidRead, SignalQuery};
use crate::config::EdidChoice;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The driver name of the Pi 5's capture front end (VIDIOC_QUERYCAP).
const CFE_DRIVER: &str = "rp1-cfe";
/// Subdevs whose name starts with this are HDMI bridges the box knows.
const BRIDGE_NAMES: &[&str] = &["tc358743"];
/// `media-ctl` is given this long per call.
const MEDIA_CTL_TIMEOUT: Duration = Duration::from_secs(5);

/// The size and format a capture must ask for (a media-controller pipeline does not adapt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub width: u32,
    pub height: u32,
    /// GStreamer's name of the format (`UYVY`).
    pub format: &'static str,
}

/// What the bridge holds for an EDID, for `onair status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EdidState {
    /// Not a device that takes an EDID (a webcam), or not asked yet.
    #[default]
    NotABridge,
    /// This EDID is loaded (the config's description of it).
    Loaded(String),
    /// None could be loaded, and why.
    Failed(String),
}

/// What getting the device ready found and did.
#[derive(Debug)]
pub struct Prepared {
    pub edid: EdidState,
    /// The timings the source sends, while there is a signal (`1920x1080p30.00`).
    pub timing: Option<String>,
    /// What a person would want in the log and the flight recorder (an EDID loaded, timings
    /// set, the pipeline configured), in order.
    pub notes: Vec<String>,
    /// Ready to capture (with the size and format to ask for, if they are fixed), or why not.
    pub outcome: Result<Option<Pin>, Cause>,
}

/// Where a capture node's bridge takes its ioctls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node for EDID and timing ioctls.
    pub node: PathBuf,
    /// The pad (a subdev's) or input (a video node's) they are for.
    pub pad: u32,
    /// The media-controller pipeline to configure, for an `rp1-cfe` capture.
    pub graph: Option<Graph>,
}

/// A media-controller capture pipeline: which media device, which entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub media: PathBuf,
    /// The bridge's entity, e.g. `tc358743 4-000f`.
    pub bridge: String,
    /// The capture node's entity, e.g. `rp1-cfe-csi2_ch0`.
    pub capture: String,
}

/// Gets `device` ready to capture: see the module's comment.
pub fn prepare(device: &Path, edid: &EdidChoice) -> Prepared {
    let mut prepared = Prepared {
        edid: EdidState::NotABridge,
        timing: None,
        notes: Vec::new(),
        outcome: Ok(None),
    };
    let lost = |why: String| Cause::InputLost(format!("{}: {why}", device.display()));
    let fd = match v4l2::open(device) {
        Ok(fd) => fd,
        Err(e) => {
            prepared.outcome = Err(lost(format!("cannot open it: {}", e.desc())));
            return prepared;
        }
    };
    let target = match v4l2::driver(&fd) {
        Ok(driver) if driver == CFE_DRIVER => {
            match locate_in_graph(device, Path::new("/sys"), &media_ctl_entity_node) {
                Ok(target) => target,
                Err(why) => {
                    prepared.outcome = Err(lost(why));
                    return prepared;
                }
            }
        }
        _ => Target {
            node: device.to_path_buf(),
            pad: v4l2::current_input(&fd).unwrap_or(0),
            graph: None,
        },
    };
    let bridge_fd = if target.node == device {
        fd
    } else {
        drop(fd);
        match v4l2::open(&target.node) {
            Ok(fd) => fd,
            Err(e) => {
                prepared.outcome = Err(lost(format!(
                    "cannot open its bridge {}: {}",
                    target.node.display(),
                    e.desc()
                )));
                return prepared;
            }
        }
    };
    load_edid(&bridge_fd, &target, edid, &mut prepared);
    prepared.outcome = set_timings(&bridge_fd, &target, &mut prepared).map_err(lost);
    prepared
}

/// Gives the bridge the configured EDID unless it holds it already.
fn load_edid(fd: &OwnedFd, target: &Target, choice: &EdidChoice, prepared: &mut Prepared) {
    let wanted = choice.edid.bytes();
    prepared.edid = match v4l2::read_edid(fd, target.pad) {
        Ok(EdidRead::Unsupported) => EdidState::NotABridge,
        Ok(EdidRead::Blocks(held)) if choice.edid.matches(&held) => {
            EdidState::Loaded(choice.describe())
        }
        Ok(_) => match v4l2::write_edid(fd, target.pad, wanted) {
            Ok(()) => {
                let into = match &target.graph {
                    Some(_) => format!(" into {}", target.node.display()),
                    None => String::new(),
                };
                prepared
                    .notes
                    .push(format!("EDID loaded{into}: {}", choice.describe()));
                EdidState::Loaded(choice.describe())
            }
            Err(e) => EdidState::Failed(format!("cannot load the EDID: {e}")),
        },
        Err(e) => EdidState::Failed(format!("cannot read the EDID: {}", e.desc())),
    };
}

/// Queries what the source sends and sets the receiver (and the pipeline) to it. No signal is
/// a failed start; a device without timings (a webcam) needs nothing.
fn set_timings(
    fd: &OwnedFd,
    target: &Target,
    prepared: &mut Prepared,
) -> Result<Option<Pin>, String> {
    let timings = match v4l2::query_signal(fd) {
        Ok(SignalQuery::NotDv) => return Ok(None),
        Ok(SignalQuery::NoSignal(why)) => return Err(why.to_string()),
        Ok(SignalQuery::Locked(timings)) => timings,
        Err(e) => return Err(format!("cannot query the signal: {}", e.desc())),
    };
    prepared.timing = Some(timings.to_string());
    if v4l2::current_timings(fd).ok().as_ref() != Some(&timings) {
        v4l2::set_timings(fd, &timings)
            .map_err(|e| format!("cannot set the timings {timings}: {}", e.desc()))?;
        prepared
            .notes
            .push(format!("signal {timings}, timings set"));
    }
    let Some(graph) = &target.graph else {
        return Ok(None);
    };
    let (width, height) = (timings.width(), timings.height());
    for args in graph_commands(graph, width, height) {
        run_media_ctl(&args)?;
    }
    prepared.notes.push(format!(
        "{}: {} -> csi2 -> {} set to {width}x{height} UYVY",
        graph.media.display(),
        graph.bridge,
        graph.capture
    ));
    Ok(Some(Pin {
        width,
        height,
        format: "UYVY",
    }))
}

/// The `media-ctl` calls that route the bridge to the capture node at `width`x`height`.
pub fn graph_commands(graph: &Graph, width: u32, height: u32) -> Vec<Vec<String>> {
    let media = graph.media.display().to_string();
    let format = |entity: &str, pad: u32| {
        format!("'{entity}':{pad} [fmt:UYVY8_1X16/{width}x{height} field:none colorspace:srgb]")
    };
    let call = |flag: &str, what: String| vec!["-d".into(), media.clone(), flag.into(), what];
    vec![
        vec!["-d".into(), media.clone(), "-r".into()],
        call("-l", format!("'csi2':4 -> '{}':0 [1]", graph.capture)),
        call("-V", format(&graph.bridge, 0)),
        call("-V", format("csi2", 0)),
        call("-V", format("csi2", 4)),
    ]
}

fn run_media_ctl(args: &[String]) -> Result<(), String> {
    let what = || format!("media-ctl {}", args.join(" "));
    let out = run_bounded(Command::new("media-ctl").args(args), MEDIA_CTL_TIMEOUT)
        .map_err(|e| format!("{}: {e}", what()))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} failed: {}",
            what(),
            stderr.lines().last().unwrap_or("").trim()
        ))
    }
}

/// Runs a command and takes its output, killing it after `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration) -> std::io::Result<std::process::Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", timeout.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `media-ctl -d MEDIA -e ENTITY`: the entity's device node, if it is in that graph.
fn media_ctl_entity_node(media: &Path, entity: &str) -> Option<PathBuf> {
    let out = run_bounded(
        Command::new("media-ctl")
            .arg("-d")
            .arg(media)
            .arg("-e")
            .arg(entity),
        MEDIA_CTL_TIMEOUT,
    )
    .ok()?;
    let node = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && node.starts_with("/dev/")).then(|| PathBuf::from(node))
}

/// For a media-controller capture node: its media device (the one whose device is the capture
/// node's device, in sysfs), its entity name, and the bridge subdev in the same graph.
/// `entity_node` asks the media device for an entity's node (`media-ctl -e`).
pub fn locate_in_graph(
    capture: &Path,
    sys: &Path,
    entity_node: &dyn Fn(&Path, &str) -> Option<PathBuf>,
) -> Result<Target, String> {
    let v4l = sys.join("class/video4linux");
    let node = std::fs::canonicalize(capture).unwrap_or_else(|_| capture.to_path_buf());
    let base = node
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or("not a device node")?;
    let capture_name = read_name(&v4l.join(&base)).ok_or("has no name in sysfs")?;
    let capture_device = std::fs::canonicalize(v4l.join(&base).join("device"))
        .map_err(|_| "has no parent device in sysfs".to_string())?;
    let media = std::fs::read_dir(sys.join("bus/media/devices"))
        .map_err(|_| "no media device in sysfs".to_string())?
        .flatten()
        .find(|m| {
            std::fs::canonicalize(m.path().join("device")).ok().as_ref() == Some(&capture_device)
        })
        .map(|m| PathBuf::from("/dev").join(m.file_name()))
        .ok_or("no media device owns it")?;
    let mut subdevs: Vec<_> = std::fs::read_dir(&v4l)
        .map_err(|_| "no video4linux class in sysfs".to_string())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("v4l-subdev"))
        .filter_map(|e| read_name(&e.path()))
        .filter(|name| BRIDGE_NAMES.iter().any(|b| name.starts_with(b)))
        .collect();
    subdevs.sort();
    for bridge in subdevs {
        if let Some(node) = entity_node(&media, &bridge) {
            return Ok(Target {
                node,
                pad: 0,
                graph: Some(Graph {
                    media,
                    bridge,
                    capture: capture_name,
                }),
            });
        }
    }
    Err(format!(
        "no HDMI bridge ({}) in the media graph of {}",
        BRIDGE_NAMES.join(", "),
        media.display()
    ))
}

/// Where a capture node's source-change events come from: its bridge's subdev for an
/// `rp1-cfe` capture (best effort: the node itself when the graph cannot be read), else the
/// node itself.
pub fn event_node(capture: &Path) -> PathBuf {
    let is_cfe = v4l2::open(capture)
        .ok()
        .and_then(|fd| v4l2::driver(&fd).ok())
        .is_some_and(|d| d == CFE_DRIVER);
    if !is_cfe {
        return capture.to_path_buf();
    }
    locate_in_graph(capture, Path::new("/sys"), &media_ctl_entity_node)
        .map(|t| t.node)
        .unwrap_or_else(|_| capture.to_path_buf())
}

fn read_name(dir: &Path) -> Option<String> {
    let name = std::fs::read_to_string(dir.join("name")).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A Pi 5's sysfs as the CFE driver and the tc358743 overlay make it: the capture node
    /// `video0` and `media0` share their parent device; two subdevs, one the bridge.
    fn pi5_sysfs(root: &Path) {
        let dev = root.join("devices/platform/axi/1f00128000.csi");
        std::fs::create_dir_all(&dev).unwrap();
        for (node, name) in [
            ("video0", "rp1-cfe-csi2_ch0"),
            ("v4l-subdev0", "csi2"),
            ("v4l-subdev2", "tc358743 4-000f"),
        ] {
            let d = root.join("class/video4linux").join(node);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        symlink(&dev, root.join("class/video4linux/video0/device")).unwrap();
        let media = root.join("bus/media/devices/media0");
        std::fs::create_dir_all(&media).unwrap();
        symlink(&dev, media.join("device")).unwrap();
        // Another media device (the codec's, say) with a different parent.
        let other = root.join("bus/media/devices/media1");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::create_dir_all(root.join("devices/other")).unwrap();
        symlink(root.join("devices/other"), other.join("device")).unwrap();
    }

    #[test]
    fn a_cfe_capture_finds_its_bridge_in_its_own_graph() {
        let root = tempfile::tempdir().unwrap();
        pi5_sysfs(root.path());
        let asked = std::cell::RefCell::new(Vec::new());
        let entity_node = |media: &Path, entity: &str| {
            asked
                .borrow_mut()
                .push((media.to_path_buf(), entity.to_string()));
            (media == Path::new("/dev/media0") && entity == "tc358743 4-000f")
                .then(|| PathBuf::from("/dev/v4l-subdev2"))
        };
        let target = locate_in_graph(Path::new("/dev/video0"), root.path(), &entity_node)
            .expect("the bridge");
        assert_eq!(
            target,
            Target {
                node: PathBuf::from("/dev/v4l-subdev2"),
                pad: 0,
                graph: Some(Graph {
                    media: PathBuf::from("/dev/media0"),
                    bridge: "tc358743 4-000f".into(),
                    capture: "rp1-cfe-csi2_ch0".into(),
                }),
            }
        );
        assert_eq!(
            asked.borrow().as_slice(),
            &[(PathBuf::from("/dev/media0"), "tc358743 4-000f".to_string())],
            "only bridges are asked for, only in the capture's graph"
        );
        // No bridge in that graph: said so.
        let err = locate_in_graph(Path::new("/dev/video0"), root.path(), &|_, _| None).unwrap_err();
        assert!(err.contains("no HDMI bridge"), "{err}");
    }

    #[test]
    fn the_graph_is_routed_at_the_sources_size() {
        let graph = Graph {
            media: PathBuf::from("/dev/media0"),
            bridge: "tc358743 4-000f".into(),
            capture: "rp1-cfe-csi2_ch0".into(),
        };
        let calls: Vec<String> = graph_commands(&graph, 1280, 720)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            calls,
            [
                "-d /dev/media0 -r",
                "-d /dev/media0 -l 'csi2':4 -> 'rp1-cfe-csi2_ch0':0 [1]",
                "-d /dev/media0 -V 'tc358743 4-000f':0 [fmt:UYVY8_1X16/1280x720 field:none colorspace:srgb]",
                "-d /dev/media0 -V 'csi2':0 [fmt:UYVY8_1X16/1280x720 field:none colorspace:srgb]",
                "-d /dev/media0 -V 'csi2':4 [fmt:UYVY8_1X16/1280x720 field:none colorspace:srgb]",
            ]
        );
    }

    #[test]
    fn a_command_that_hangs_is_killed() {
        let started = Instant::now();
        let err =
            run_bounded(Command::new("sleep").arg("10"), Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
