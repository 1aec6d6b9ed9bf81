//! Deterministic test inputs for the kernel unit tests.

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Named adversarial blocks of `N` values: zeros, constants, tiny, huge,
/// one-signed, heavy-tailed, exact rounding ties, subnormals, the fp16 range
/// edge, spikes and plain random data.
pub fn adversarial_blocks<const N: usize>(seed: u64) -> Vec<(String, [f32; N])> {
    let mut r = Rng::new(seed);
    let mut out: Vec<(String, [f32; N])> = Vec::new();
    let mut push = |name: &str, f: &mut dyn FnMut(usize) -> f32| {
        let mut x = [0f32; N];
        for (i, v) in x.iter_mut().enumerate() {
            *v = f(i);
        }
        out.push((name.to_string(), x));
    };
    push("zeros", &mut |_| 0.0);
    push("const+1", &mut |_| 1.0);
    push("const-3", &mut |_| -3.0);
    push("const1e-3", &mut |_| 1e-3);
    for rep in 0..3 {
        let _ = rep;
        let mut rr = Rng::new(r.next_u64());
        push("normal", &mut |_| rr.normal());
        push("normal*0.02", &mut |_| rr.normal() * 0.02);
        push("tiny1e-7", &mut |_| rr.normal() * 1e-7);
        push("huge1e3", &mut |_| rr.normal() * 1e3);
        push("huge1e4", &mut |_| rr.normal() * 1e4);
        push("positive", &mut |_| rr.normal().abs());
        push("negative", &mut |_| -rr.normal().abs() - 0.5);
        push("cauchy", &mut |_| (std::f32::consts::PI * (rr.uniform() - 0.5)).tan().clamp(-1e4, 1e4));
        push("uniform", &mut |_| rr.uniform() * 2.0 - 1.0);
        push("subnormal", &mut |_| {
            f32::from_bits(rr.below(0x007F_FFFF) as u32) * if rr.below(2) == 0 { 1.0 } else { -1.0 }
        });
        push("f16max", &mut |_| (rr.uniform() * 2.0 - 1.0) * 65504.0);
        push("spike", &mut |i| if i == 5 { 100.0 } else { rr.normal() * 0.01 });
        push("sparse", &mut |_| if rr.below(8) == 0 { rr.normal() } else { 0.0 });
        // values on half-integer grids whose extreme sets a power-of-two scale:
        // every rounding step lands exactly on a tie
        let e = (rr.below(5) as i32) - 2;
        push("ties", &mut |i| {
            if i == 0 {
                -8.0 * 2f32.powi(e)
            } else {
                (rr.below(33) as f32 - 16.0) * 0.5 * 2f32.powi(e)
            }
        });
        push("ties127", &mut |i| if i == 1 { 127.0 } else { (rr.below(255) as f32 - 127.0) * 0.5 });
        push("int", &mut |_| rr.below(16) as f32 - 8.0);
    }
    push("alt_extremes", &mut |i| if i % 2 == 0 { 1.0 } else { -1.0 });
    push("ramp", &mut |i| i as f32 / N as f32 - 0.5);
    out
}
