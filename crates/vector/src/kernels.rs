//! Distance kernels, written so that LLVM vectorises them: the search runs them inside a
//! `pulp` dispatch, which compiles the whole search loop for the CPU's widest instruction set
//! (AVX2/FMA, AVX-512) and picks it at run time — no `unsafe`, no `-C target-cpu`.

/// Squared Euclidean distance between two code vectors.
#[inline(always)]
pub fn l2_u8(a: &[u8], b: &[u8]) -> u32 {
    let mut acc = 0u32;
    let (ac, at) = a.as_chunks::<64>();
    let (bc, bt) = b.as_chunks::<64>();
    for (x, y) in ac.iter().zip(bc) {
        let mut block = 0i32;
        for i in 0..64 {
            let d = i32::from(x[i]) - i32::from(y[i]);
            block += d * d;
        }
        acc += block as u32;
    }
    for (&x, &y) in at.iter().zip(bt) {
        let d = i32::from(x) - i32::from(y);
        acc += (d * d) as u32;
    }
    acc
}

/// Dot product of two code vectors.
#[inline(always)]
pub fn dot_u8(a: &[u8], b: &[u8]) -> u32 {
    let mut acc = 0u32;
    let (ac, at) = a.as_chunks::<64>();
    let (bc, bt) = b.as_chunks::<64>();
    for (x, y) in ac.iter().zip(bc) {
        let mut block = 0i32;
        for i in 0..64 {
            block += i32::from(x[i]) * i32::from(y[i]);
        }
        acc += block as u32;
    }
    for (&x, &y) in at.iter().zip(bt) {
        acc += u32::from(x) * u32::from(y);
    }
    acc
}

/// Squared Euclidean distance.
#[inline(always)]
pub fn l2_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, at) = a.as_chunks::<16>();
    let (bc, bt) = b.as_chunks::<16>();
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..16 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in at.iter().zip(bt) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

/// Dot product.
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, at) = a.as_chunks::<16>();
    let (bc, bt) = b.as_chunks::<16>();
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in at.iter().zip(bt) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_naive_sums() {
        let a: Vec<u8> = (0..131).map(|i| (i * 37 % 256) as u8).collect();
        let b: Vec<u8> = (0..131).map(|i| (i * 91 % 256) as u8).collect();
        let l2: i64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (i64::from(x) - i64::from(y)).pow(2))
            .sum();
        let dot: i64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| i64::from(x) * i64::from(y))
            .sum();
        assert_eq!(i64::from(l2_u8(&a, &b)), l2);
        assert_eq!(i64::from(dot_u8(&a, &b)), dot);
        let fa: Vec<f32> = a.iter().map(|&x| f32::from(x) / 7.0).collect();
        let fb: Vec<f32> = b.iter().map(|&x| f32::from(x) / 7.0).collect();
        let fl2: f64 = fa
            .iter()
            .zip(&fb)
            .map(|(&x, &y)| f64::from(x - y).powi(2))
            .sum();
        let fdot: f64 = fa
            .iter()
            .zip(&fb)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        assert!((f64::from(l2_f32(&fa, &fb)) - fl2).abs() < 1e-3 * fl2);
        assert!((f64::from(dot_f32(&fa, &fb)) - fdot).abs() < 1e-3 * fdot);
    }
}
