//! volley-proto: the wire protocol between actors and the learner.
//!
//! Tensors travel as raw little-endian bytes with a dtype and a shape, never as
//! repeated floats. This crate owns the dtype table and the size checks every
//! receiver runs before it trusts a tensor.

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
}
