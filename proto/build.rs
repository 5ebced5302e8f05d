//! Generates the prost messages and the tonic client and server of `volley.v1`, and
//! the prost messages of TensorBoard's event files (`tensorboard`).

use std::io;

fn main() -> io::Result<()> {
    // A vendored protoc, so building needs no system protobuf compiler.
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    std::env::set_var("PROTOC", protoc);

    tonic_prost_build::configure()
        // Tensor and weight payloads decode as `bytes::Bytes` views of the receive
        // buffer instead of fresh `Vec<u8>` copies.
        .bytes(".volley.v1")
        .compile_protos(
            &[
                "proto/volley/v1/volley.proto",
                "proto/tensorboard/event.proto",
            ],
            &["proto"],
        )
}
