//! HTTP/1.x wire handling: head parsing ([`head`]), the chunked transfer
//! coding ([`chunked`]), body streaming ([`body`]) and the head rewriting a
//! proxy does ([`rewrite`]).

pub mod body;
pub mod chunked;
pub mod head;
pub mod rewrite;

pub use head::{BodyKind, MessageInfo, RequestHead, ResponseHead};
