//! The TLS passthrough ClientHello/SNI parser: no panic; a server name it
//! returns is lowercase without a trailing dot; and once it has decided
//! (complete or invalid), more bytes do not change its answer.
#![no_main]

use lb_http::fuzz_api::{HelloResult, client_hello_sni};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = client_hello_sni(data);
    if let HelloResult::Complete(Some(name)) = &r {
        assert!(!name.ends_with('.'), "{name:?}");
        assert_eq!(*name, name.to_ascii_lowercase());
    }
    if r != HelloResult::Partial {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0x16, 3, 1, 0, 1, 1]);
        assert_eq!(client_hello_sni(&longer), r);
    }
});
