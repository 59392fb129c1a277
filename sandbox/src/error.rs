use std::io;

use thiserror::Error;

/// Errors of the sandbox crate.
#[derive(Debug, Error)]
pub enum Error {
    #[error("creating the helper's socket pair: {0}")]
    Socket(#[source] io::Error),
    #[error("starting the namespace helper: {0}")]
    Fork(#[source] io::Error),
    #[error("{step}: {source}")]
    Helper {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the namespace helper ended without an answer")]
    NoAnswer,
    #[error("reading the namespace helper's answer: {0}")]
    Receive(#[source] io::Error),
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    #[error("starting the jailed process: {0}")]
    Spawn(#[source] io::Error),
    #[error("seccomp: {0}")]
    Seccomp(String),
}

pub type Result<T> = std::result::Result<T, Error>;
