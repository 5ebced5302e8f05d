//! Typed data to wire tensors and back.
//!
//! Encoding an owned `Vec<T>` hands its allocation to `bytes::Bytes` without copying
//! (little-endian hosts); encoding a borrowed slice copies it once. Decoding checks the
//! dtype and the byte length first, then borrows the bytes as `&[T]` when they are
//! aligned (prost decodes `bytes` fields as views of the receive buffer, so this is
//! the zero-copy path) and converts into a `Vec<T>` otherwise.

use std::borrow::Cow;
use std::mem::{align_of, size_of, size_of_val};

use bytes::Bytes;

use crate::v1::Tensor;
use crate::{check_tensor_bytes, DType, TensorError};

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
    impl Sealed for f32 {}
    impl Sealed for bool {}
}

/// A Rust element type with a wire dtype: plain data, no padding, fixed size.
pub trait Element: Copy + Send + Sync + 'static + sealed::Sealed {
    /// The wire dtype of this element type.
    const DTYPE: DType;
    /// Reads one element from `DTYPE.size()` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
}

impl Element for u8 {
    const DTYPE: DType = DType::U8;
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0]
    }
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

macro_rules! le_element {
    ($t:ty, $dtype:expr) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;
            fn from_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; size_of::<$t>()];
                raw.copy_from_slice(&bytes[..size_of::<$t>()]);
                <$t>::from_le_bytes(raw)
            }
        }
    };
}
le_element!(i32, DType::I32);
le_element!(i64, DType::I64);
le_element!(f32, DType::F32);

/// The bytes of a slice of elements, in host order.
fn host_bytes<T: Element>(data: &[T]) -> &[u8] {
    // SAFETY: `Element` is sealed to u8, i32, i64, f32 and bool: plain data without
    // padding, so every byte of the slice is initialised, and u8 has alignment 1. The
    // returned slice borrows `data` and covers exactly its `size_of_val` bytes.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), size_of_val(data)) }
}

/// An owned `Vec<T>` seen as its bytes, so `Bytes::from_owner` can keep it alive
/// without a copy.
struct VecBytes<T: Element>(Vec<T>);

impl<T: Element> AsRef<[u8]> for VecBytes<T> {
    fn as_ref(&self) -> &[u8] {
        host_bytes(&self.0)
    }
}

fn shape_u64(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&d| d as u64).collect()
}

/// Little-endian bytes of `data`: the same allocation on little-endian hosts.
fn vec_into_bytes<T: Element>(data: Vec<T>) -> Bytes {
    if cfg!(target_endian = "little") || T::DTYPE.size() == 1 {
        Bytes::from_owner(VecBytes(data))
    } else {
        slice_to_bytes(&data)
    }
}

/// Little-endian bytes of `data`, copied once.
fn slice_to_bytes<T: Element>(data: &[T]) -> Bytes {
    if cfg!(target_endian = "little") || T::DTYPE.size() == 1 {
        Bytes::copy_from_slice(host_bytes(data))
    } else {
        let size = T::DTYPE.size();
        let mut out = Vec::with_capacity(size_of_val(data));
        for chunk in host_bytes(data).chunks_exact(size) {
            out.extend(chunk.iter().rev());
        }
        Bytes::from(out)
    }
}

/// A wire tensor of `shape` that takes ownership of `data` (no copy on little-endian
/// hosts). Fails if `data` does not hold exactly `product(shape)` elements.
pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor, TensorError> {
    let shape = shape_u64(shape);
    check_tensor_bytes(T::DTYPE, &shape, size_of_val(data.as_slice()))?;
    Ok(Tensor {
        dtype: T::DTYPE.to_wire() as i32,
        shape,
        data: vec_into_bytes(data),
    })
}

/// A wire tensor of `shape` holding a copy of `data`.
pub fn from_slice<T: Element>(shape: &[usize], data: &[T]) -> Result<Tensor, TensorError> {
    let shape = shape_u64(shape);
    check_tensor_bytes(T::DTYPE, &shape, size_of_val(data))?;
    Ok(Tensor {
        dtype: T::DTYPE.to_wire() as i32,
        shape,
        data: slice_to_bytes(data),
    })
}

/// A wire tensor from bytes that are already little-endian (e.g. a tch tensor's
/// storage), checked against `dtype` and `shape`.
pub fn from_bytes(dtype: DType, shape: &[usize], data: Bytes) -> Result<Tensor, TensorError> {
    let shape = shape_u64(shape);
    check_tensor_bytes(dtype, &shape, data.len())?;
    Ok(Tensor {
        dtype: dtype.to_wire() as i32,
        shape,
        data,
    })
}

impl Tensor {
    /// The tensor's dtype; an unspecified or unknown wire value is an error.
    pub fn elem_type(&self) -> Result<DType, TensorError> {
        DType::from_wire(self.dtype)
    }

    /// Checks the dtype and that the bytes match dtype and shape; returns the dtype
    /// and the element count.
    pub fn check(&self) -> Result<(DType, usize), TensorError> {
        let dtype = self.elem_type()?;
        let elems = check_tensor_bytes(dtype, &self.shape, self.data.len())?;
        Ok((dtype, elems))
    }

    /// The shape as `usize`s (fails only if a dimension does not fit).
    pub fn dims(&self) -> Result<Vec<usize>, TensorError> {
        self.shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| TensorError::ShapeOverflow {
                shape: self.shape.clone(),
            })
    }
}

/// The elements of `tensor` as `T`, after checking dtype and byte length: borrowed
/// from the wire bytes when they are aligned for `T` on a little-endian host, copied
/// otherwise. A bool tensor with a byte other than 0 or 1 is an error.
pub fn typed<T: Element>(tensor: &Tensor) -> Result<Cow<'_, [T]>, TensorError> {
    typed_bytes(tensor.elem_type()?, &tensor.shape, &tensor.data)
}

/// [`typed`] on the parts of a tensor.
pub fn typed_bytes<'a, T: Element>(
    dtype: DType,
    shape: &[u64],
    bytes: &'a [u8],
) -> Result<Cow<'a, [T]>, TensorError> {
    if dtype != T::DTYPE {
        return Err(TensorError::DTypeMismatch {
            expected: T::DTYPE,
            got: dtype,
        });
    }
    let elems = check_tensor_bytes(dtype, shape, bytes.len())?;
    if T::DTYPE == DType::Bool {
        if let Some(index) = first_non_bool(bytes) {
            return Err(TensorError::InvalidBool { index });
        }
    }
    let aligned = (bytes.as_ptr() as usize) % align_of::<T>() == 0;
    if (cfg!(target_endian = "little") || size_of::<T>() == 1) && aligned {
        // SAFETY: the pointer is aligned for T, the slice covers `elems * size_of::<T>()`
        // initialised bytes (checked above), every bit pattern of those bytes is a
        // valid T (bool bytes were checked to be 0 or 1), the host is little-endian
        // like the wire, and the result borrows `bytes`.
        let view = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), elems) };
        return Ok(Cow::Borrowed(view));
    }
    Ok(Cow::Owned(le_to_vec(bytes)))
}

/// Little-endian bytes to elements, without checks: a trailing partial element is
/// ignored and a bool is any non-zero byte. For bytes already validated.
pub fn le_to_vec<T: Element>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(T::DTYPE.size())
        .map(T::from_le)
        .collect()
}

/// The elements of `tensor` as an owned `Vec<T>`, after the checks of [`typed`].
pub fn to_vec<T: Element>(tensor: &Tensor) -> Result<Vec<T>, TensorError> {
    typed(tensor).map(Cow::into_owned)
}

/// `f32` elements of a tensor (see [`typed`]).
pub fn f32s(tensor: &Tensor) -> Result<Cow<'_, [f32]>, TensorError> {
    typed(tensor)
}

/// `i64` elements of a tensor (see [`typed`]).
pub fn i64s(tensor: &Tensor) -> Result<Cow<'_, [i64]>, TensorError> {
    typed(tensor)
}

/// `u8` elements of a tensor: always borrowed.
pub fn u8s(tensor: &Tensor) -> Result<Cow<'_, [u8]>, TensorError> {
    typed(tensor)
}

/// `bool` elements of a tensor (see [`typed`]).
pub fn bools(tensor: &Tensor) -> Result<Cow<'_, [bool]>, TensorError> {
    typed(tensor)
}

/// Elements scanned between early exits of [`first_non_finite_f32`]: large enough for
/// the inner loop to vectorise, small enough to stop soon after a bad value.
const FINITE_BLOCK: usize = 4096;

/// The index of the first NaN or infinite value among little-endian `f32` bytes, or
/// `None` if all are finite. Trailing bytes short of a whole element are ignored.
pub fn first_non_finite_f32(bytes: &[u8]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    let non_finite = |c: &[u8]| {
        let bits = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        bits & EXP == EXP
    };
    for (block_index, block) in bytes.chunks(FINITE_BLOCK * 4).enumerate() {
        // No early exit inside a block, so the compiler can vectorise this.
        let bad = block
            .chunks_exact(4)
            .fold(false, |acc, c| acc | non_finite(c));
        if bad {
            let offset = block.chunks_exact(4).position(non_finite)?;
            return Some(block_index * FINITE_BLOCK + offset);
        }
    }
    None
}

/// The index of the first byte that is neither 0 nor 1, or `None`.
pub fn first_non_bool(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_vectors_are_encoded_without_copying() {
        let data = vec![1.0f32, -2.5, 3.25, 0.0, 7.0, 8.0];
        let ptr = data.as_ptr().cast::<u8>();
        let t = from_vec(&[2, 3], data).expect("shape matches");
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.elem_type(), Ok(DType::F32));
        assert_eq!(t.data.len(), 24);
        if cfg!(target_endian = "little") {
            assert_eq!(t.data.as_ptr(), ptr);
        }
        assert_eq!(&t.data[4..8], &(-2.5f32).to_le_bytes());
        assert_eq!(
            f32s(&t).expect("f32").as_ref(),
            &[1.0, -2.5, 3.25, 0.0, 7.0, 8.0]
        );
    }

    #[test]
    fn every_element_type_round_trips() {
        let t = from_slice(&[3], &[1i64, -2, i64::MAX]).expect("encode");
        assert_eq!(i64s(&t).expect("decode").as_ref(), &[1, -2, i64::MAX]);
        let t = from_vec(&[2, 2], vec![0u8, 1, 254, 255]).expect("encode");
        assert!(matches!(u8s(&t), Ok(Cow::Borrowed(&[0, 1, 254, 255]))));
        let t = from_vec(&[3], vec![true, false, true]).expect("encode");
        assert_eq!(&t.data[..], &[1, 0, 1]);
        assert_eq!(bools(&t).expect("decode").as_ref(), &[true, false, true]);
        let t = from_slice(&[2], &[i32::MIN, 5]).expect("encode");
        assert_eq!(to_vec::<i32>(&t), Ok(vec![i32::MIN, 5]));
    }

    #[test]
    fn unaligned_bytes_are_decoded_by_copy() {
        let mut raw = vec![0u8];
        raw.extend_from_slice(&1.5f32.to_le_bytes());
        raw.extend_from_slice(&(-4.0f32).to_le_bytes());
        let bytes = Bytes::from(raw).slice(1..);
        let t = from_bytes(DType::F32, &[2], bytes).expect("length matches");
        assert_eq!(f32s(&t).expect("decode").as_ref(), &[1.5, -4.0]);
    }

    #[test]
    fn mismatches_are_errors() {
        assert!(matches!(
            from_vec(&[2, 2], vec![1.0f32; 3]),
            Err(TensorError::ByteLength {
                expected: 16,
                got: 12,
                ..
            })
        ));
        let t = from_vec(&[2], vec![1.0f32, 2.0]).expect("encode");
        assert_eq!(
            i64s(&t).map(|_| ()),
            Err(TensorError::DTypeMismatch {
                expected: DType::I64,
                got: DType::F32
            })
        );
        let mut truncated = t.clone();
        truncated.data = truncated.data.slice(..7);
        assert!(matches!(
            f32s(&truncated),
            Err(TensorError::ByteLength { .. })
        ));
        let mut unknown = t;
        unknown.dtype = 42;
        assert_eq!(unknown.check(), Err(TensorError::UnknownDType { code: 42 }));
        let bad_bool = from_bytes(DType::Bool, &[2], Bytes::from_static(&[1, 2])).expect("len");
        assert_eq!(
            bools(&bad_bool).map(|_| ()),
            Err(TensorError::InvalidBool { index: 1 })
        );
        assert_eq!(first_non_bool(&bad_bool.data), Some(1));
    }

    #[test]
    fn non_finite_values_are_found() {
        let mut v = vec![0.5f32; 10_000];
        let t = from_slice(&[10_000], &v).expect("encode");
        assert_eq!(first_non_finite_f32(&t.data), None);
        v[9_000] = f32::NAN;
        v[9_500] = f32::INFINITY;
        let t = from_slice(&[10_000], &v).expect("encode");
        assert_eq!(first_non_finite_f32(&t.data), Some(9_000));
        let t = from_slice(&[2], &[f32::NEG_INFINITY, 1.0]).expect("encode");
        assert_eq!(first_non_finite_f32(&t.data), Some(0));
        let t = from_slice(&[2], &[f32::MAX, f32::MIN_POSITIVE]).expect("encode");
        assert_eq!(first_non_finite_f32(&t.data), None);
    }
}
