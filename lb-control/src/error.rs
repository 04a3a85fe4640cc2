//! The errors of the appliance: its configuration file, watching manifest
//! files and the VIP interface. (Findings about objects are
//! [`lb_compile::diag::Diagnostic`]s.)

use std::path::PathBuf;

/// The lb-control error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    ConfigIo {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML, has an unknown key or a bad value.
    #[error("invalid configuration file {}: {message}", path.display())]
    ConfigInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key and line where known.
        message: String,
    },
    /// Watching manifest files failed.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The path that could not be watched.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
    /// `[loadbalancer] interface` cannot be managed (missing, or netlink failed).
    #[error("loadbalancer.interface {name}: {source}")]
    VipInterface {
        /// The interface name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}
