//! `berth-build`: everything between "here is a folder" and "here is a command
//! that serves it".
//!
//! * [`archive`] packs a source folder into a tar.gz upload and extracts
//!   untrusted uploads safely (no path traversal, no symlink tricks, no bombs).
//! * [`mod@detect`] looks at an extracted source tree and turns it into a
//!   [`detect::BuildPlan`]: install/build steps plus how to serve the result.
//! * [`fs_safe`] reads an app's tree on the host without following symlinks out of
//!   it (detection, the static output check and lockfile hashing go through it).
//! * [`dockerfile`] finds a source tree's own Dockerfile or generates one from a
//!   plan, for container providers.
//! * [`sandbox`] decides how an untrusted command is run (bubblewrap when it is
//!   available, a plain process group otherwise).
//! * [`step`] runs one build step inside the sandbox with streamed log lines,
//!   a timeout and cancellation, and kills the whole process tree when needed.
//!
//! The crate deliberately knows nothing about databases, HTTP or deployment
//! state: the control plane owns those and calls into these modules.

pub mod archive;
pub mod detect;
pub mod dockerfile;
pub mod fs_safe;
pub mod sandbox;
pub mod step;

pub use archive::{ArchiveError, ArchiveLimits, ExtractStats, PackStats, extract_tar_gz, pack_dir_tar_gz};
pub use detect::{BuildPack, BuildPlan, BuildSettings, BuildStep, DetectError, ServePlan, detect, resolve_output_dir};
pub use sandbox::{ResourceLimits, Sandbox, SandboxSpec, shell_argv};
pub use step::{LogStream, StepError, StepOutcome, kill_process_group, run_step, terminate_child_tree};
