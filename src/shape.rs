//! Tensor shapes under both dimension conventions, and the row view every
//! kernel and chunk loop works on.
//!
//! GGUF (ggml) lists dimensions innermost first: `dims[0]` (ne0) is the row
//! length. safetensors (like numpy and PyTorch) lists them outermost first:
//! the last dimension is the row length. A [`Shape`] borrows a dimension list
//! with its convention and answers the same questions for both; every tensor
//! type of the crate (`gguf::TensorInfo`, `gguf::TensorSpec`,
//! `pipeline::SourceTensor`, `convert::OutTensor`, `hf::HfTensor`,
//! `hf::safetensors::TensorEntry`) answers `row_len`/`n_rows`/`n_elements`
//! through it, so the convention is decided in one place.

/// A dimension list and its convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape<'a> {
    /// ggml order: row length first.
    Ggml(&'a [u64]),
    /// Row-major order (safetensors, numpy): row length last.
    RowMajor(&'a [u64]),
}

impl Shape<'_> {
    /// Elements in a row (1 for a scalar).
    pub fn row_len(&self) -> u64 {
        match self {
            Shape::Ggml(d) => d.first().copied().unwrap_or(1),
            Shape::RowMajor(d) => d.last().copied().unwrap_or(1),
        }
    }

    /// Rows: the product of every dimension but the row length (1 for a scalar or a vector).
    pub fn n_rows(&self) -> u64 {
        match self {
            Shape::Ggml(d) => d.iter().skip(1).product(),
            Shape::RowMajor(d) => d.split_last().map_or(1, |(_, rest)| rest.iter().product()),
        }
    }

    /// Elements in all.
    pub fn n_elements(&self) -> u64 {
        match self {
            Shape::Ggml(d) | Shape::RowMajor(d) => d.iter().product(),
        }
    }

    /// The dimensions in ggml order (row length first).
    pub fn ggml_dims(&self) -> Vec<u64> {
        match self {
            Shape::Ggml(d) => d.to_vec(),
            Shape::RowMajor(d) => d.iter().rev().copied().collect(),
        }
    }

    /// The dimensions in row-major order (row length last).
    pub fn row_major_dims(&self) -> Vec<u64> {
        match self {
            Shape::Ggml(d) => d.iter().rev().copied().collect(),
            Shape::RowMajor(d) => d.to_vec(),
        }
    }
}

/// The inherent `shape`, `row_len`, `n_rows` and `n_elements` of a tensor
/// type whose dimension list is the field `$dims`, in convention `$conv`
/// (`Ggml` or `RowMajor`): every tensor type answers them the same way.
macro_rules! shape_accessors {
    ($t:ty, $conv:ident, $dims:ident) => {
        impl $t {
            /// The dimension list with its convention.
            pub fn shape(&self) -> $crate::shape::Shape<'_> {
                $crate::shape::Shape::$conv(&self.$dims)
            }
            /// Elements in a row (1 for a scalar).
            pub fn row_len(&self) -> u64 {
                self.shape().row_len()
            }
            /// Rows: the product of every dimension but the row length.
            pub fn n_rows(&self) -> u64 {
                self.shape().n_rows()
            }
            /// Elements in all.
            pub fn n_elements(&self) -> u64 {
                self.shape().n_elements()
            }
        }
    };
}
pub(crate) use shape_accessors;

#[cfg(test)]
mod tests {
    use super::Shape;

    #[test]
    fn both_conventions_agree() {
        // A 3-D expert tensor: 4 experts of 3 rows of 8.
        let g = [8u64, 3, 4];
        let r = [4u64, 3, 8];
        for s in [Shape::Ggml(&g), Shape::RowMajor(&r)] {
            assert_eq!((s.row_len(), s.n_rows(), s.n_elements()), (8, 12, 96));
            assert_eq!(s.ggml_dims(), g);
            assert_eq!(s.row_major_dims(), r);
        }
    }

    #[test]
    fn scalars_and_vectors_are_one_row() {
        for s in [Shape::Ggml(&[]), Shape::RowMajor(&[])] {
            assert_eq!((s.row_len(), s.n_rows(), s.n_elements()), (1, 1, 1));
        }
        for s in [Shape::Ggml(&[5]), Shape::RowMajor(&[5])] {
            assert_eq!((s.row_len(), s.n_rows(), s.n_elements()), (5, 1, 5));
        }
    }
}
