//! The order in which ggml's CPU `argsort` (hence `ggml_argsort_top_k`, the
//! expert selection of a mixture of experts) returns indices: it runs
//! `std::sort` on `0..n` with `data[a] > data[b]` (descending), and
//! `std::sort` is not stable, so among equal values the order is whatever
//! GNU libstdc++'s introsort leaves. This module follows that algorithm
//! (`bits/stl_algo.h`, `bits/stl_heap.h`: median-of-three pivot moved to the
//! front, unguarded partition, heapsort past `2·⌊log2 n⌋` levels, then an
//! insertion sort, unguarded past the first 16) so that ties come out in the
//! same order. Up to 16 elements it is a plain insertion sort, hence stable.

const THRESHOLD: usize = 16;

/// Indices `0..values.len()`, largest value first, ties ordered as
/// libstdc++'s `std::sort` orders them.
pub fn argsort_desc(values: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let less = |a: usize, b: usize| values[a] > values[b];
    sort(&mut idx, &less);
    idx
}

fn lg(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

fn sort(v: &mut [usize], less: &dyn Fn(usize, usize) -> bool) {
    if v.len() > 1 {
        introsort_loop(v, 0, v.len(), 2 * lg(v.len()), less);
        final_insertion_sort(v, less);
    }
}

fn introsort_loop(
    v: &mut [usize],
    first: usize,
    mut last: usize,
    mut depth: usize,
    less: &dyn Fn(usize, usize) -> bool,
) {
    while last - first > THRESHOLD {
        if depth == 0 {
            partial_sort(&mut v[first..last], less);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(v, first, last, less);
        introsort_loop(v, cut, last, depth, less);
        last = cut;
    }
}

fn move_median_to_first(
    v: &mut [usize],
    result: usize,
    a: usize,
    b: usize,
    c: usize,
    less: &dyn Fn(usize, usize) -> bool,
) {
    let l = |x: usize, y: usize| less(v[x], v[y]);
    let pick = if l(a, b) {
        if l(b, c) {
            b
        } else if l(a, c) {
            c
        } else {
            a
        }
    } else if l(a, c) {
        a
    } else if l(b, c) {
        c
    } else {
        b
    };
    v.swap(result, pick);
}

fn partition_pivot(v: &mut [usize], first: usize, last: usize, less: &dyn Fn(usize, usize) -> bool) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(v, first, first + 1, mid, last - 1, less);
    // Unguarded partition of [first + 1, last) around v[first].
    let pivot = v[first];
    let (mut lo, mut hi) = (first + 1, last);
    loop {
        while less(v[lo], pivot) {
            lo += 1;
        }
        hi -= 1;
        while less(pivot, v[hi]) {
            hi -= 1;
        }
        if lo >= hi {
            return lo;
        }
        v.swap(lo, hi);
        lo += 1;
    }
}

fn final_insertion_sort(v: &mut [usize], less: &dyn Fn(usize, usize) -> bool) {
    if v.len() > THRESHOLD {
        insertion_sort(&mut v[..THRESHOLD], less);
        for i in THRESHOLD..v.len() {
            unguarded_linear_insert(v, i, less);
        }
    } else {
        insertion_sort(v, less);
    }
}

fn insertion_sort(v: &mut [usize], less: &dyn Fn(usize, usize) -> bool) {
    for i in 1..v.len() {
        let val = v[i];
        if less(val, v[0]) {
            v.copy_within(0..i, 1);
            v[0] = val;
        } else {
            unguarded_linear_insert(v, i, less);
        }
    }
}

fn unguarded_linear_insert(v: &mut [usize], mut last: usize, less: &dyn Fn(usize, usize) -> bool) {
    let val = v[last];
    while less(val, v[last - 1]) {
        v[last] = v[last - 1];
        last -= 1;
    }
    v[last] = val;
}

/// `std::partial_sort(first, last, last)`: make_heap, then sort_heap.
fn partial_sort(v: &mut [usize], less: &dyn Fn(usize, usize) -> bool) {
    let len = v.len();
    if len >= 2 {
        let mut parent = (len - 2) / 2;
        loop {
            let value = v[parent];
            adjust_heap(v, parent, len, value, less);
            if parent == 0 {
                break;
            }
            parent -= 1;
        }
    }
    let mut last = len;
    while last > 1 {
        last -= 1;
        let value = v[last];
        v[last] = v[0];
        adjust_heap(&mut v[..last], 0, last, value, less);
    }
}

fn adjust_heap(v: &mut [usize], mut hole: usize, len: usize, value: usize, less: &dyn Fn(usize, usize) -> bool) {
    let top = hole;
    let mut child = hole;
    while len > 0 && child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(v[child], v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len.is_multiple_of(2) && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    // push_heap
    while hole > top {
        let parent = (hole - 1) / 2;
        if !less(v[parent], value) {
            break;
        }
        v[hole] = v[parent];
        hole = parent;
    }
    v[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_descending() {
        let v: Vec<f32> = (0..200).map(|i| ((i * 7919) % 1000) as f32).collect();
        let idx = argsort_desc(&v);
        assert!(idx.windows(2).all(|w| v[w[0]] >= v[w[1]]));
        let mut seen = idx.clone();
        seen.sort();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn up_to_16_is_stable() {
        let v = [1.0f32, 2.0, 1.0, 2.0, 1.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(argsort_desc(&v), vec![1, 3, 6, 0, 2, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15, 5]);
    }

    fn gen(n: usize, mul: usize, m: usize, square: bool) -> Vec<f32> {
        (0..n).map(|i| ((if square { i * i } else { i * mul }) % m) as f32).collect()
    }

    fn ids(s: &str) -> Vec<usize> {
        s.split(',').map(|x| x.parse().unwrap()).collect()
    }

    /// Expected orders printed by g++ 12 (libstdc++) for `std::sort` of
    /// `0..n` with `v[a] > v[b]` over the same generated values (`e`:
    /// `std::partial_sort(first, last, last)`, the heapsort fallback).
    #[test]
    fn ties_come_out_as_libstdcxx_orders_them() {
        let cases = [
            ("a", gen(128, 37, 5, false), "87,42,47,52,37,57,62,32,67,72,27,77,82,22,92,17,112,127,2,122,117,7,97,107,102,12,89,99,44,94,49,124,54,119,59,64,114,69,104,74,109,84,79,29,4,39,9,24,14,19,34,101,71,76,26,81,86,21,91,96,16,41,106,11,111,116,6,121,126,1,61,36,51,31,66,56,46,113,118,93,18,48,58,98,8,43,103,13,53,108,38,88,33,63,68,73,23,28,83,123,3,78,15,5,45,125,115,50,40,120,90,30,75,25,80,65,0,85,20,110,60,95,35,70,100,55,105,10"),
            ("b", gen(40, 13, 3, false), "29,20,17,23,14,26,11,8,32,5,35,2,38,31,1,34,28,25,37,22,16,13,4,10,19,7,30,39,0,3,36,6,33,9,12,27,15,24,18,21"),
            ("c", gen(128, 0, 1, false), "80,95,94,93,92,91,90,89,88,87,86,85,84,83,82,81,96,79,78,77,76,75,74,73,72,71,70,69,68,67,66,65,112,127,126,125,124,123,122,121,120,119,118,117,116,115,114,113,64,111,110,109,108,107,106,105,104,103,102,101,100,99,98,97,16,31,30,29,28,27,26,25,24,23,22,21,20,19,18,17,32,15,14,13,12,11,10,9,8,7,6,5,4,3,2,1,48,63,62,61,60,59,58,57,56,55,54,53,52,51,50,49,0,47,46,45,44,43,42,41,40,39,38,37,36,35,34,33"),
            ("d", gen(100, 1, 7, true), "19,40,37,82,79,33,44,30,86,47,26,75,23,51,89,54,9,65,2,68,5,61,96,16,58,12,72,93,74,59,60,46,45,52,66,67,80,53,73,38,3,4,95,10,11,94,17,18,88,24,25,87,39,81,31,32,50,99,69,97,83,78,71,92,85,90,76,34,1,6,8,13,15,20,22,27,29,64,36,41,43,62,57,55,48,84,28,49,0,21,77,91,56,14,35,70,7,42,98,63"),
        ];
        for (name, v, want) in cases {
            assert_eq!(argsort_desc(&v), ids(want), "case {name}");
        }
        let v = gen(50, 11, 4, false);
        let mut idx: Vec<usize> = (0..50).collect();
        partial_sort(&mut idx, &|a, b| v[a] > v[b]);
        assert_eq!(idx, ids("17,1,45,29,5,13,33,41,49,9,21,37,25,34,2,38,18,42,10,46,26,6,22,14,30,15,7,31,3,35,39,19,43,47,23,11,27,32,16,8,36,40,20,4,44,0,48,24,12,28"));
    }
}
