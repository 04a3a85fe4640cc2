//! `lb-pod-runner`: a kubelet and scheduler stand-in for a local Kubernetes control
//! plane (see `bench::pod_runner`).
//!
//! ```text
//! lb-pod-runner --kubeconfig DIR/admin.kubeconfig --node lb-node --zone zone-a \
//!   --pod-cidr 127.77.0.0/16 --echo target/release/lb-echo \
//!   [--image-bin SUBSTRING=PATH]... --log-dir DIR/pods --ready-file DIR/pod-runner.ready
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    bench::pod_runner::main(std::env::args().skip(1))
}
