use super::*;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, Metadata, Value};
use crate::progress::NoProgress;
use crate::quant;
use std::path::PathBuf;

/// F32 tensors held in memory.
struct MemSource {
    tensors: Vec<SourceTensor>,
    data: Vec<Vec<f32>>,
    raw: Vec<Vec<u8>>,
}

impl MemSource {
    fn new(items: Vec<(&str, Vec<u64>, Vec<f32>)>) -> Self {
        let mut s = MemSource { tensors: vec![], data: vec![], raw: vec![] };
        for (name, dims, values) in items {
            s.tensors.push(SourceTensor { name: name.into(), dims, ty: GgmlType::F32 });
            s.raw.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
            s.data.push(values);
        }
        s
    }
}

impl TensorSource for MemSource {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }
    fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> Result<()> {
        let row = self.tensors[index].row_len() as usize;
        let start = row0 as usize * row;
        out.copy_from_slice(&self.data[index][start..start + out.len()]);
        Ok(())
    }
    fn raw(&self, index: usize) -> Option<&[u8]> {
        Some(&self.raw[index])
    }
}

fn metadata() -> Metadata {
    let mut md = Metadata::new();
    md.push("general.architecture", Value::string("test"));
    md
}

#[test]
fn writes_converted_and_copied_tensors_in_plan_order() {
    let a: Vec<f32> = (0..64 * 37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let b: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let src = MemSource::new(vec![("a", vec![64, 37], a.clone()), ("b", vec![10], b.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.gguf");
    let plan = vec![Planned::new(1, GgmlType::F32), Planned::new(0, GgmlType::F16)];
    // Tiny chunks: many chunks and tasks per tensor.
    let opts = WriteOptions { threads: 3, chunk_bytes: 64 * 4 * 5, ..Default::default() };
    let summary = write_gguf(&src, &plan, &metadata(), &dest, &[], &opts, &NoProgress).unwrap();
    assert_eq!(summary.tensors.len(), 2);
    assert!(summary.tensors[0].copied);
    let f = GgufFile::open(&dest).unwrap();
    assert_eq!(f.header.tensors[0].name, "b");
    assert_eq!(f.header.tensors[1].ty, GgmlType::F16);
    let mut got = vec![0f32; a.len()];
    quant::dequantize_rows(GgmlType::F16, f.data(&f.header.tensors[1]), &mut got).unwrap();
    for (x, y) in a.iter().zip(&got) {
        assert_eq!(half::f16::from_f32(*x).to_f32(), *y);
    }
    assert_eq!(f.bytes().len() as u64, summary.file_size);
}

#[test]
fn non_finite_input_is_an_error_and_leaves_no_file() {
    let mut a = vec![1.0f32; 32 * 4];
    a[32 * 2 + 5] = f32::NAN;
    let src = MemSource::new(vec![("w", vec![32, 4], a)]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.gguf");
    let e =
        write_gguf(&src, &[Planned::new(0, GgmlType::F16)], &metadata(), &dest, &[], &Default::default(), &NoProgress)
            .unwrap_err();
    assert!(matches!(e, Error::NonFinite { row: 2, .. }), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Copied as stored: also checked.
    let e =
        write_gguf(&src, &[Planned::new(0, GgmlType::F32)], &metadata(), &dest, &[], &Default::default(), &NoProgress)
            .unwrap_err();
    assert!(matches!(e, Error::NonFinite { row: 2, .. }), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn multi_writer_equals_single_writes() {
    let a: Vec<f32> = (0..256 * 6).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let b: Vec<f32> = (0..64).map(|i| i as f32 * 0.5).collect();
    let c: Vec<f32> = (0..32 * 9).map(|i| (i as f32 * 1.7).cos()).collect();
    let src = MemSource::new(vec![("a", vec![256, 6], a.clone()), ("b", vec![64], b), ("c", vec![32, 9], c.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let mut md2 = metadata();
    md2.push("general.alignment", Value::U32(64));
    // Different orders, types, copies, a tensor left out, another alignment.
    let plans = [
        vec![Planned::new(0, GgmlType::F32), Planned::new(1, GgmlType::F32), Planned::new(2, GgmlType::F16)],
        vec![Planned::new(2, GgmlType::Q8_0), Planned::new(0, GgmlType::Q4_K), Planned::new(1, GgmlType::F32)],
        vec![Planned::new(1, GgmlType::F16), Planned::new(0, GgmlType::Q6_K)],
    ];
    let mds = [metadata(), metadata(), md2];
    let dests: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("multi{i}.gguf"))).collect();
    let outputs: Vec<MultiOutput> = plans
        .iter()
        .zip(&mds)
        .zip(&dests)
        .map(|((plan, metadata), dest)| MultiOutput { plan, metadata, dest })
        .collect();
    // Small chunks: many chunks per tensor.
    let opts =
        WriteOptions { threads: 3, chunk_bytes: 256 * 4 * 2, measure_error: true, hash: true, ..Default::default() };
    let multi = write_gguf_multi(&src, &outputs, &[], &opts, &NoProgress).unwrap();
    for (i, o) in outputs.iter().enumerate() {
        let single = dir.path().join(format!("single{i}.gguf"));
        let s = write_gguf(&src, o.plan, o.metadata, &single, &[], &Default::default(), &NoProgress).unwrap();
        assert_eq!(std::fs::read(&single).unwrap(), std::fs::read(o.dest).unwrap(), "output {i}");
        assert_eq!(multi[i].tensors, s.tensors);
        assert_eq!(multi[i].file_size, s.file_size);
        // The sinks' own hashes, out-of-order outputs included, are the files' hashes.
        let file_hash = crate::pack::manifest::hash_bytes(&std::fs::read(o.dest).unwrap());
        assert_eq!(multi[i].sha256.as_deref(), Some(file_hash.as_str()), "output {i}");
        assert_eq!(s.sha256, None, "single {i}: not asked to hash");
    }
    // Errors: zero for F32 copies; for the others, what decoding the written file gives.
    assert!(multi[0].errors[0].sum_sq_err == 0.0 && multi[0].errors[0].n == 256 * 6);
    let f = GgufFile::open(&dests[1]).unwrap();
    let mut got = vec![0f32; a.len()];
    quant::dequantize_rows(GgmlType::Q4_K, f.data(&f.header.tensors[1]), &mut got).unwrap();
    let (mut se, mut sr, mut mx) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(&got) {
        let d = *x as f64 - *y as f64;
        se += d * d;
        sr += (*x as f64) * (*x as f64);
        mx = mx.max(d.abs());
    }
    let e = multi[1].errors[1];
    assert!(e.sum_sq_err > 0.0);
    assert!((e.sum_sq_err - se).abs() <= 1e-9 * se, "{} vs {se}", e.sum_sq_err);
    assert!((e.sum_sq_ref - sr).abs() <= 1e-9 * sr);
    assert_eq!(e.max_abs_err, mx);
    // The figures do not depend on threads or chunking.
    let d2 = tempfile::tempdir().unwrap();
    let dests2: Vec<PathBuf> = (0..3).map(|i| d2.path().join(format!("m{i}.gguf"))).collect();
    let outputs2: Vec<MultiOutput> = outputs.iter().zip(&dests2).map(|(o, dest)| MultiOutput { dest, ..*o }).collect();
    let opts2 = WriteOptions { threads: 1, chunk_bytes: 1 << 20, measure_error: true, ..Default::default() };
    let again = write_gguf_multi(&src, &outputs2, &[], &opts2, &NoProgress).unwrap();
    for (x, y) in multi.iter().zip(&again) {
        assert_eq!(x.errors, y.errors);
    }
}

#[test]
fn multi_writer_failure_leaves_nothing() {
    let mut a = vec![1.0f32; 32 * 8];
    a[32 * 7 + 3] = f32::INFINITY;
    let src = MemSource::new(vec![("ok", vec![32, 4], vec![0.5; 128]), ("bad", vec![32, 8], a)]);
    let dir = tempfile::tempdir().unwrap();
    let md = metadata();
    let plans = [
        vec![Planned::new(0, GgmlType::F16), Planned::new(1, GgmlType::Q8_0)],
        vec![Planned::new(1, GgmlType::F32), Planned::new(0, GgmlType::F32)],
    ];
    let dests: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("o{i}.gguf"))).collect();
    let outputs: Vec<MultiOutput> =
        plans.iter().zip(&dests).map(|(plan, dest)| MultiOutput { plan, metadata: &md, dest }).collect();
    let opts = WriteOptions { chunk_bytes: 32 * 4, ..Default::default() };
    let e = write_gguf_multi(&src, &outputs, &[], &opts, &NoProgress).unwrap_err();
    assert!(matches!(e, Error::NonFinite { row: 7, .. }), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // The same destination twice is refused before anything is written.
    let twice = [outputs[0], MultiOutput { plan: &plans[1], ..outputs[0] }];
    assert!(write_gguf_multi(&src, &twice, &[], &opts, &NoProgress).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_plans_are_refused() {
    let src = MemSource::new(vec![("w", vec![33, 2], vec![0.0; 66])]);
    assert!(check_plan(&src, &[Planned::new(0, GgmlType::Q8_0)]).is_err());
    assert!(check_plan(&src, &[Planned::new(1, GgmlType::F32)]).is_err());
    assert!(check_plan(&src, &[Planned::new(0, GgmlType::F32), Planned::new(0, GgmlType::F16)]).is_err());
}
