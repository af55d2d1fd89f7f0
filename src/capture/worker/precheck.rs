//! Start-up errors that say what to do. libavdevice reports a wrong camera, format or size, a
//! busy device or a missing permission as a bare errno; the operator needs to hear what exists
//! and which setting to change, so the camera is checked against what it offers before it is
//! opened, and an open that fails anyway has its errno turned into such a message.

use std::path::Path;

use ffmpeg_next as ffmpeg;

use crate::capture::devices::{list_devices, list_microphones, Devices};
use crate::capture::{CaptureError, SourceSpec};

/// Checks a camera before handing it to libavdevice, whose own errors do not say what exists.
pub(super) fn precheck_camera(
    device: &Path,
    input_format: Option<&str>,
    width: u32,
    height: u32,
) -> Result<(), CaptureError> {
    let devices = list_devices();
    if !device.exists() {
        return Err(CaptureError::DeviceMissing {
            device: device.display().to_string(),
            found: devices.cameras_summary(),
        });
    }
    let Some(camera) = devices.camera(device) else {
        // Exists but could not be queried (permissions, not a capture node): let the open
        // report it precisely.
        return Ok(());
    };
    if camera.formats.is_empty() {
        return Ok(());
    }
    let format = match input_format {
        Some(wanted) => match camera
            .formats
            .iter()
            .find(|f| f.name() == wanted || f.fourcc == wanted)
        {
            Some(f) => Some(f),
            None => {
                return Err(CaptureError::UnsupportedFormat {
                    device: device.display().to_string(),
                    requested: wanted.to_string(),
                    available: camera.format_names().join(", "),
                })
            }
        },
        None => None,
    };
    let offers = match format {
        Some(f) => f.offers_size(width, height),
        None => {
            let answers: Vec<Option<bool>> = camera
                .formats
                .iter()
                .map(|f| f.offers_size(width, height))
                .collect();
            if answers.contains(&Some(true)) || answers.contains(&None) {
                Some(true)
            } else {
                Some(false)
            }
        }
    };
    if offers == Some(false) {
        return Err(CaptureError::UnsupportedSize {
            device: device.display().to_string(),
            width,
            height,
            available: camera.summary(),
        });
    }
    Ok(())
}

/// Turns libavformat's bare errno into a message that says what to do.
pub(super) fn refine_open_error(spec: &SourceSpec, err: CaptureError) -> CaptureError {
    let CaptureError::Open { what, source } = err else {
        return err;
    };
    let errno = match source {
        ffmpeg::Error::Other { errno } => Some(errno),
        _ => None,
    };
    match (spec, errno) {
        (_, Some(libc::EBUSY)) => CaptureError::DeviceBusy {
            device: spec.device_name(),
        },
        (SourceSpec::V4l2 { .. }, Some(libc::EACCES | libc::EPERM)) => {
            CaptureError::PermissionDenied {
                device: spec.device_name(),
                group: "video",
            }
        }
        (SourceSpec::Alsa { .. }, Some(libc::EACCES | libc::EPERM)) => {
            CaptureError::PermissionDenied {
                device: spec.device_name(),
                group: "audio",
            }
        }
        (SourceSpec::V4l2 { device, .. }, Some(libc::ENOENT | libc::ENODEV | libc::ENXIO)) => {
            CaptureError::DeviceMissing {
                device: device.display().to_string(),
                found: list_devices().cameras_summary(),
            }
        }
        (
            SourceSpec::V4l2 {
                device,
                input_format: Some(f),
                ..
            },
            Some(libc::EINVAL),
        ) => {
            let available = list_devices()
                .camera(device)
                .map(|c| c.format_names().join(", "))
                .unwrap_or_else(|| "unknown (the camera could not be queried)".into());
            CaptureError::UnsupportedFormat {
                device: device.display().to_string(),
                requested: f.clone(),
                available,
            }
        }
        (SourceSpec::Alsa { device, .. }, _) => CaptureError::AlsaOpen {
            device: device.clone(),
            source,
            found: Devices {
                cameras: Vec::new(),
                microphones: list_microphones(),
            }
            .microphones_summary(),
        },
        (SourceSpec::File { path, .. }, _) => CaptureError::FileOpen {
            path: path.display().to_string(),
            source,
        },
        _ => CaptureError::Open { what, source },
    }
}
