//! The `lb` command.
#![forbid(unsafe_code)]

fn main() {}
