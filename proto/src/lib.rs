//! volley-proto: the wire protocol between actors and the learner.
//!
//! Tensors travel as raw little-endian bytes with a dtype and a shape, never as
//! repeated floats. This crate owns the `.proto` files, the code generated from them,
//! the dtype table and the size checks every receiver runs before it trusts a tensor,
//! and the one table that maps rejections to `tonic::Code`.
//!
//! - [`v1`]: the generated messages, client and server of `volley.v1` (re-exported here).
//! - [`tensorboard`]: the generated messages of TensorBoard event files (the subset of
//!   TensorFlow's `Event` and `Summary` the learner writes).
//! - [`tensor`]: typed slices to wire tensors and back.
//! - [`status`]: rejection reasons, their status codes and metric labels.

pub mod status;
pub mod tensor;

/// The code generated from `proto/volley/v1/volley.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    unused_qualifications
)]
pub mod v1 {
    tonic::include_proto!("volley.v1");
}

/// The code generated from `proto/tensorboard/event.proto`: `Event`, `Summary` and
/// `Value`, with TensorFlow's field numbers.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    unused_qualifications
)]
pub mod tensorboard {
    tonic::include_proto!("tensorboard");
}

pub use v1::volley_client::VolleyClient;
pub use v1::volley_server::{Volley, VolleyServer};
pub use v1::{
    ActionKind, Chunk, ChunkAck, RegisterReply, RegisterRequest, Tensor, Weights, WeightsRequest,
};

/// The protocol version this build speaks; a peer with another one is refused with
/// `FAILED_PRECONDITION`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Element types a wire tensor may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    U8,
    I32,
    I64,
    F32,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::Bool => 1,
            DType::I32 | DType::F32 => 4,
            DType::I64 => 8,
        }
    }

    /// Lowercase name, for messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F32 => "f32",
            DType::Bool => "bool",
        }
    }

    /// Whether values of this dtype can be NaN or infinite.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32)
    }

    /// The generated enum's value for this dtype.
    pub fn to_wire(self) -> v1::Dtype {
        match self {
            DType::U8 => v1::Dtype::U8,
            DType::I32 => v1::Dtype::I32,
            DType::I64 => v1::Dtype::I64,
            DType::F32 => v1::Dtype::F32,
            DType::Bool => v1::Dtype::Bool,
        }
    }

    /// The dtype a wire enum value names; `UNSPECIFIED` and unknown values are errors.
    pub fn from_wire(code: i32) -> Result<DType, TensorError> {
        match v1::Dtype::try_from(code) {
            Ok(v1::Dtype::U8) => Ok(DType::U8),
            Ok(v1::Dtype::I32) => Ok(DType::I32),
            Ok(v1::Dtype::I64) => Ok(DType::I64),
            Ok(v1::Dtype::F32) => Ok(DType::F32),
            Ok(v1::Dtype::Bool) => Ok(DType::Bool),
            Ok(v1::Dtype::Unspecified) | Err(_) => Err(TensorError::UnknownDType { code }),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<DType> for v1::Dtype {
    fn from(dtype: DType) -> Self {
        dtype.to_wire()
    }
}

impl TryFrom<v1::Dtype> for DType {
    type Error = TensorError;

    fn try_from(wire: v1::Dtype) -> Result<Self, Self::Error> {
        DType::from_wire(wire as i32)
    }
}

/// A tensor whose bytes do not match its dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("tensor shape {shape:?} overflows the addressable size")]
    ShapeOverflow { shape: Vec<u64> },
    #[error("tensor of dtype {dtype:?} and shape {shape:?} needs {expected} bytes, got {got}")]
    ByteLength {
        dtype: DType,
        shape: Vec<u64>,
        expected: usize,
        got: usize,
    },
    #[error("unknown tensor dtype {code}")]
    UnknownDType { code: i32 },
    #[error("tensor has dtype {got}, expected {expected}")]
    DTypeMismatch { expected: DType, got: DType },
    #[error("bool tensor element {index} is neither 0 nor 1")]
    InvalidBool { index: usize },
}

/// Checks that `len` bytes hold exactly one tensor of `dtype` and `shape`, and returns
/// the element count.
pub fn check_tensor_bytes(dtype: DType, shape: &[u64], len: usize) -> Result<usize, TensorError> {
    let overflow = || TensorError::ShapeOverflow {
        shape: shape.to_vec(),
    };
    let elems = shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    });
    let elems = elems.ok_or_else(overflow)?;
    let expected = elems.checked_mul(dtype.size()).ok_or_else(overflow)?;
    if expected != len {
        return Err(TensorError::ByteLength {
            dtype,
            shape: shape.to_vec(),
            expected,
            got: len,
        });
    }
    Ok(elems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_lengths_are_checked_against_shape_and_dtype() {
        assert_eq!(check_tensor_bytes(DType::F32, &[2, 3], 24), Ok(6));
        assert_eq!(
            check_tensor_bytes(DType::U8, &[64, 64, 3], 12288),
            Ok(12288)
        );
        assert!(matches!(
            check_tensor_bytes(DType::F32, &[2, 3], 23),
            Err(TensorError::ByteLength {
                expected: 24,
                got: 23,
                ..
            })
        ));
        assert!(matches!(
            check_tensor_bytes(DType::I64, &[u64::MAX, 2], 0),
            Err(TensorError::ShapeOverflow { .. })
        ));
    }

    #[test]
    fn dtypes_round_trip_through_the_wire_enum() {
        for dtype in [DType::U8, DType::I32, DType::I64, DType::F32, DType::Bool] {
            assert_eq!(DType::from_wire(dtype.to_wire() as i32), Ok(dtype));
        }
        assert_eq!(
            DType::from_wire(0),
            Err(TensorError::UnknownDType { code: 0 })
        );
        assert_eq!(
            DType::from_wire(99),
            Err(TensorError::UnknownDType { code: 99 })
        );
    }
}
