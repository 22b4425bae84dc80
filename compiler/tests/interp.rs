//! The reference interpreter, one primitive at a time, against hand-computed values.
//! Each case is written as IR text, so the tests read like the IR they exercise.

use nnc_compiler::interp::eval;
use nnc_ir::{DType, TABLE, parse_module};
use nnc_runtime::Tensor;

fn t(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::new(DType::F32, shape.to_vec(), data.to_vec())
}

/// Parses one function and evaluates it on the given inputs (no parameters).
fn run(ir: &str, inputs: &[Tensor]) -> Tensor {
    let m = parse_module(ir).unwrap_or_else(|e| panic!("{e}\n{ir}"));
    nnc_ir::verify_module(&m).unwrap();
    let out = nnc_compiler::interp::eval(&m.funcs[0], inputs, &[]).unwrap();
    out.into_iter().next().unwrap()
}

fn unary(op: &str, x: &[f64]) -> Vec<f64> {
    let ir = format!(
        "func @f(%x: f32[{n}]) -> f32[{n}] {{\n  %0 = {op} %x : f32[{n}]\n  return %0\n}}\n",
        n = x.len()
    );
    run(&ir, &[t(&[x.len()], x)]).data
}

fn binary(op: &str, x: &[f64], y: &[f64]) -> Vec<f64> {
    let n = x.len();
    let ir = format!(
        "func @f(%x: f32[{n}], %y: f32[{n}]) -> f32[{n}] {{\n  %0 = {op} %x, %y : f32[{n}]\n  return %0\n}}\n"
    );
    run(&ir, &[t(&[n], x), t(&[n], y)]).data
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{a:?} vs {b:?}");
    }
}

#[test]
fn unary_ops() {
    assert_eq!(unary("neg", &[1.0, -2.0, 0.0]), [-1.0, 2.0, 0.0]);
    assert_eq!(unary("abs", &[1.5, -2.0]), [1.5, 2.0]);
    assert_eq!(unary("sign", &[3.0, -0.5, 0.0]), [1.0, -1.0, 0.0]);
    close(
        &unary("exp", &[0.0, 1.0, -1.0]),
        &[1.0, std::f64::consts::E, 0.36787944117],
    );
    close(&unary("log", &[1.0, std::f64::consts::E]), &[0.0, 1.0]);
    assert_eq!(unary("sqrt", &[4.0, 2.25]), [2.0, 1.5]);
    close(&unary("tanh", &[0.0, 0.5]), &[0.0, 0.46211715726]);
    // 1 / (1 + e^-x): 1 / (1 + 1/3) at x = ln 3.
    close(
        &unary("sigmoid", &[0.0, 3f64.ln(), -3f64.ln()]),
        &[0.5, 0.75, 0.25],
    );
    close(
        &unary("sin", &[0.0, 0.5, -2.0]),
        &[0.0, 0.47942553860, -0.90929742682],
    );
    close(
        &unary("cos", &[0.0, 0.5, -2.0]),
        &[1.0, 0.87758256189, -0.41614683654],
    );
    // erf(0.5) and erf(-1.5) from Abramowitz and Stegun's table 7.1.
    close(
        &unary("erf", &[0.0, 0.5, -1.5]),
        &[0.0, 0.52049987781, -0.96610514647],
    );
    assert_eq!(unary("stop_gradient", &[1.5, -2.0]), [1.5, -2.0]);
}

#[test]
fn binary_ops() {
    let (x, y) = ([1.0, 6.0, -2.0], [2.0, 3.0, -2.0]);
    assert_eq!(binary("add", &x, &y), [3.0, 9.0, -4.0]);
    assert_eq!(binary("sub", &x, &y), [-1.0, 3.0, 0.0]);
    assert_eq!(binary("mul", &x, &y), [2.0, 18.0, 4.0]);
    assert_eq!(binary("div", &x, &y), [0.5, 2.0, 1.0]);
    assert_eq!(binary("max", &x, &y), [2.0, 6.0, -2.0]);
    assert_eq!(binary("min", &x, &y), [1.0, 3.0, -2.0]);
    assert_eq!(binary("pow", &[2.0, 9.0], &[3.0, 0.5]), [8.0, 3.0]);
    assert_eq!(binary("lt", &x, &y), [1.0, 0.0, 0.0]);
    assert_eq!(binary("le", &x, &y), [1.0, 0.0, 1.0]);
    assert_eq!(binary("gt", &x, &y), [0.0, 1.0, 0.0]);
    assert_eq!(binary("ge", &x, &y), [0.0, 1.0, 1.0]);
    assert_eq!(binary("eq", &x, &y), [0.0, 0.0, 1.0]);
    assert_eq!(binary("ne", &x, &y), [1.0, 1.0, 0.0]);
}

#[test]
fn f32_results_are_rounded_to_f32() {
    // 0.1 + 0.2 in f32 is 0.30000001192092896, not f64's 0.30000000000000004.
    let r = binary("add", &[0.1], &[0.2]);
    assert_eq!(r[0], (0.1f32 + 0.2f32) as f64);
}

#[test]
fn select() {
    let ir = "func @f(%c: f32[3], %a: f32[3], %b: f32[3]) -> f32[3] {\n  %0 = select %c, %a, %b : f32[3]\n  return %0\n}\n";
    let r = run(
        ir,
        &[
            t(&[3], &[1.0, 0.0, -1.0]),
            t(&[3], &[1.0, 2.0, 3.0]),
            t(&[3], &[4.0, 5.0, 6.0]),
        ],
    );
    assert_eq!(r.data, [1.0, 5.0, 3.0]);
}

#[test]
fn reductions() {
    // x = [[1, 2, 3], [4, 5, 6]]
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let f = |op: &str, axes: &str, out: &str| {
        let ir = format!(
            "func @f(%x: f32[2, 3]) -> {out} {{\n  %0 = {op} %x, axes=[{axes}] : {out}\n  return %0\n}}\n"
        );
        run(&ir, std::slice::from_ref(&x)).data
    };
    assert_eq!(f("sum", "0", "f32[3]"), [5.0, 7.0, 9.0]);
    assert_eq!(f("sum", "1", "f32[2]"), [6.0, 15.0]);
    assert_eq!(f("sum", "0, 1", "f32[]"), [21.0]);
    assert_eq!(f("mean", "1", "f32[2]"), [2.0, 5.0]);
    assert_eq!(f("mean", "0, 1", "f32[]"), [3.5]);
    assert_eq!(f("reduce_max", "0", "f32[3]"), [4.0, 5.0, 6.0]);
    assert_eq!(f("reduce_max", "1", "f32[2]"), [3.0, 6.0]);
}

#[test]
fn matmul_plain_and_batched() {
    let ir = "func @f(%a: f32[2, 3], %b: f32[3, 2]) -> f32[2, 2] {\n  %0 = matmul %a, %b : f32[2, 2]\n  return %0\n}\n";
    let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    assert_eq!(run(ir, &[a, b]).data, [58.0, 64.0, 139.0, 154.0]);
    let ir = "func @f(%a: f32[2, 1, 2], %b: f32[2, 2, 1]) -> f32[2, 1, 1] {\n  %0 = matmul %a, %b : f32[2, 1, 1]\n  return %0\n}\n";
    let a = t(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2, 1], &[5.0, 6.0, 7.0, 8.0]);
    assert_eq!(run(ir, &[a, b]).data, [17.0, 53.0]);
}

#[test]
fn broadcast_reshape_transpose() {
    let ir = "func @f(%b: f32[3]) -> f32[2, 3] {\n  %0 = broadcast %b, dims=[1] : f32[2, 3]\n  return %0\n}\n";
    assert_eq!(
        run(ir, &[t(&[3], &[1.0, 2.0, 3.0])]).data,
        [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    );
    let ir = "func @f(%b: f32[2]) -> f32[2, 3] {\n  %0 = broadcast %b, dims=[0] : f32[2, 3]\n  return %0\n}\n";
    assert_eq!(
        run(ir, &[t(&[2], &[1.0, 2.0])]).data,
        [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    );
    let ir =
        "func @f(%s: f32[]) -> f32[2] {\n  %0 = broadcast %s, dims=[] : f32[2]\n  return %0\n}\n";
    assert_eq!(run(ir, &[t(&[], &[7.0])]).data, [7.0, 7.0]);
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ir =
        "func @f(%x: f32[2, 3]) -> f32[3, 2] {\n  %0 = reshape %x : f32[3, 2]\n  return %0\n}\n";
    let r = run(ir, std::slice::from_ref(&x));
    assert_eq!((r.shape.clone(), r.data), (vec![3, 2], x.data.clone()));
    let ir = "func @f(%x: f32[2, 3]) -> f32[3, 2] {\n  %0 = transpose %x, perm=[1, 0] : f32[3, 2]\n  return %0\n}\n";
    assert_eq!(run(ir, &[x]).data, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
}

#[test]
fn const_cast_one_hot() {
    let ir = "func @f() -> f32[2, 2] {\n  %0 = const 0.5 : f32[2, 2]\n  return %0\n}\n";
    assert_eq!(run(ir, &[]).data, [0.5; 4]);
    let ir = "func @f(%x: f32[3]) -> i32[3] {\n  %0 = cast %x : i32[3]\n  return %0\n}\n";
    assert_eq!(
        run(ir, &[t(&[3], &[1.7, -1.7, 2.0])]).data,
        [1.0, -1.0, 2.0]
    );
    let ir = "func @f(%y: i32[3]) -> f32[3, 4] {\n  %0 = one_hot %y : f32[3, 4]\n  return %0\n}\n";
    let y = Tensor::new(DType::I32, vec![3], vec![2.0, 0.0, 7.0]);
    assert_eq!(
        run(ir, &[y]).data,
        [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn matmul_shares_a_matrix_across_the_batch() {
    // [2, 1, 2] x [2, 2]: both products use the same right-hand matrix.
    let ir = "func @f(%a: f32[2, 1, 2], %b: f32[2, 2]) -> f32[2, 1, 2] {\n  %0 = matmul %a, %b : f32[2, 1, 2]\n  return %0\n}\n";
    let a = t(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2], &[1.0, 10.0, 100.0, 1000.0]);
    assert_eq!(run(ir, &[a, b]).data, [201.0, 2010.0, 403.0, 4030.0]);
    // [1, 2] x [2, 2, 1]: the left matrix is shared.
    let ir = "func @f(%a: f32[1, 2], %b: f32[2, 2, 1]) -> f32[2, 1, 1] {\n  %0 = matmul %a, %b : f32[2, 1, 1]\n  return %0\n}\n";
    let a = t(&[1, 2], &[1.0, 2.0]);
    let b = t(&[2, 2, 1], &[5.0, 6.0, 7.0, 8.0]);
    assert_eq!(run(ir, &[a, b]).data, [17.0, 23.0]);
}

#[test]
fn windows_and_their_adjoint() {
    // A 3x3 image, 2x2 windows, stride 1: [1, 1, 2, 2, 2, 2].
    let img = t(
        &[1, 1, 3, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    );
    let ir = "func @f(%x: f32[1, 1, 3, 3]) -> f32[1, 1, 2, 2, 2, 2] {\n  %0 = im2col %x, kernel=[2, 2], stride=[1, 1], pad=[0, 0] : f32[1, 1, 2, 2, 2, 2]\n  return %0\n}\n";
    // Window offset (0,0) over the 2x2 output grid, then (0,1), (1,0), (1,1).
    assert_eq!(
        run(ir, std::slice::from_ref(&img)).data,
        [
            1.0, 2.0, 4.0, 5.0, 2.0, 3.0, 5.0, 6.0, 4.0, 5.0, 7.0, 8.0, 5.0, 6.0, 8.0, 9.0
        ]
    );
    // Padding 1, stride 2, 2x2 windows: the top-left window sees only pixel (0,0).
    let ir = "func @f(%x: f32[1, 1, 3, 3]) -> f32[1, 1, 2, 2, 2, 2] {\n  %0 = im2col %x, kernel=[2, 2], stride=[2, 2], pad=[1, 1] : f32[1, 1, 2, 2, 2, 2]\n  return %0\n}\n";
    assert_eq!(
        run(ir, std::slice::from_ref(&img)).data,
        [
            0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 4.0, 6.0, 0.0, 2.0, 0.0, 8.0, 1.0, 3.0, 7.0, 9.0
        ]
    );
    // col2im of all ones counts how many windows cover each pixel.
    let ir = "func @f(%c: f32[1, 1, 2, 2, 2, 2]) -> f32[1, 1, 3, 3] {\n  %0 = col2im %c, kernel=[2, 2], stride=[1, 1], pad=[0, 0] : f32[1, 1, 3, 3]\n  return %0\n}\n";
    assert_eq!(
        run(ir, &[t(&[1, 1, 2, 2, 2, 2], &[1.0; 16])]).data,
        [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]
    );
}

#[test]
fn slice_pad_iota() {
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ir = "func @f(%x: f32[2, 3]) -> f32[2, 2] {\n  %0 = slice %x, axis=1, start=1 : f32[2, 2]\n  return %0\n}\n";
    assert_eq!(run(ir, &[x]).data, [2.0, 3.0, 5.0, 6.0]);
    let ir = "func @f(%x: f32[2, 1]) -> f32[2, 3] {\n  %0 = pad %x, axis=1, start=2 : f32[2, 3]\n  return %0\n}\n";
    assert_eq!(
        run(ir, &[t(&[2, 1], &[7.0, 8.0])]).data,
        [0.0, 0.0, 7.0, 0.0, 0.0, 8.0]
    );
    let ir = "func @f() -> f32[2, 3] {\n  %0 = iota axes=[1] : f32[2, 3]\n  return %0\n}\n";
    assert_eq!(run(ir, &[]).data, [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
}

#[test]
fn random_is_a_function_of_key_stream_and_index() {
    let ir = |stream: &str| {
        format!(
            "func @f(%k: i32[]) -> f32[1000] {{\n  %0 = random {stream} %k : f32[1000]\n  return %0\n}}\n"
        )
    };
    let key = |k: f64| Tensor::new(DType::I32, vec![], vec![k]);
    let a = run(&ir("1.0"), &[key(7.0)]).data;
    assert_eq!(a, run(&ir("1.0"), &[key(7.0)]).data, "same key and stream");
    assert_ne!(a, run(&ir("1.0"), &[key(8.0)]).data, "another key");
    assert_ne!(a, run(&ir("2.0"), &[key(7.0)]).data, "another stream");
    // Uniform on [0, 1): in range, mean near 1/2, 1000 distinct values.
    assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
    let mean = a.iter().sum::<f64>() / 1000.0;
    assert!((mean - 0.5).abs() < 0.05, "{mean}");
    let mut sorted = a.clone();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    assert_eq!(sorted.len(), 1000);
}

#[test]
fn symbolic_dimensions_bind_from_inputs_and_must_agree() {
    let m = parse_module("func @f(%x: f32[B, 2], %y: f32[B, 2]) -> f32[B, 2] {\n  %0 = add %x, %y : f32[B, 2]\n  return %0\n}\n").unwrap();
    let f = &m.funcs[0];
    let ok = nnc_compiler::interp::eval(f, &[t(&[3, 2], &[1.0; 6]), t(&[3, 2], &[2.0; 6])], &[])
        .unwrap();
    assert_eq!(ok[0].data, [3.0; 6]);
    let err = nnc_compiler::interp::eval(f, &[t(&[3, 2], &[1.0; 6]), t(&[4, 2], &[2.0; 8])], &[])
        .unwrap_err();
    assert!(err.0.contains("B = 4"), "{err}");
    let err = nnc_compiler::interp::eval(f, &[t(&[3, 3], &[1.0; 9]), t(&[3, 2], &[2.0; 6])], &[])
        .unwrap_err();
    assert!(
        err.0.contains("`x` expects f32[B, 2], got f32[3, 3]"),
        "{err}"
    );
}

#[test]
fn gather_and_scatter_add_pick_and_sum_rows() {
    let ir = "func @f(%t: f32[3, 2], %ids: i32[4]) -> (f32[4, 2], f32[3, 2], f32[2, 4]) {
  %0 = gather %t, %ids, axis=0, line=0 : f32[4, 2]
  %1 = scatter_add %0, %ids, axis=0, line=0 : f32[3, 2]
  %2 = transpose %t, perm=[1, 0] : f32[2, 3]
  %3 = gather %2, %ids, axis=1, line=0 : f32[2, 4]
  return %0, %1, %3
}";
    let m = parse_module(ir).unwrap();
    let t = Tensor::new(DType::F32, vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ids = Tensor::new(DType::I32, vec![4], vec![2.0, 0.0, 2.0, 1.0]);
    let out = eval(&m.funcs[0], &[t.clone(), ids], &[]).unwrap();
    assert_eq!(out[0].data, [5.0, 6.0, 1.0, 2.0, 5.0, 6.0, 3.0, 4.0]);
    // Row 2 was picked twice: its adjoint is twice the row.
    assert_eq!(out[1].data, [1.0, 2.0, 3.0, 4.0, 10.0, 12.0]);
    assert_eq!(out[2].data, [5.0, 1.0, 5.0, 3.0, 6.0, 2.0, 6.0, 4.0]);
    // An id outside the table is an error naming the op and its line, never a read.
    let ir = ir.replace("line=0 : f32[4, 2]", "line=7 : f32[4, 2]");
    let m = parse_module(&ir).unwrap();
    let bad = Tensor::new(DType::I32, vec![4], vec![2.0, 3.0, 0.0, 0.0]);
    let err = eval(&m.funcs[0], &[t, bad], &[]).unwrap_err();
    assert_eq!(
        err.0,
        "`gather` on line 7: id 3 is outside the table's rows 0..3"
    );
}

#[test]
fn concat_joins_along_an_axis() {
    let ir = "func @f(%a: f32[2, 1], %b: f32[2, 2]) -> (f32[2, 3], f32[4, 2]) {
  %0 = concat %a, %b, axis=1 : f32[2, 3]
  %1 = concat %b, %b, axis=0 : f32[4, 2]
  return %0, %1
}";
    let m = parse_module(ir).unwrap();
    let a = Tensor::new(DType::F32, vec![2, 1], vec![1.0, 2.0]);
    let b = Tensor::new(DType::F32, vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]);
    let out = eval(&m.funcs[0], &[a, b], &[]).unwrap();
    assert_eq!(out[0].data, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    assert_eq!(out[1].data, [3.0, 4.0, 5.0, 6.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(
        m.to_string().lines().nth(1).unwrap(),
        "  %0 = concat %a, %b, axis=1 : f32[2, 3]"
    );
}

#[test]
fn attention_and_its_adjoint() {
    // d = 1, so the scale is 1. Query 0 scores keys (0, 0): probabilities (1/2, 1/2);
    // query 1 scores (0, ln 3): (1/4, 3/4). Causal, query 0 sees key 0 alone.
    let ir = "func @f(%q: f32[2, 1], %k: f32[2, 1], %v: f32[2, 1], %dy: f32[2, 1]) -> (f32[2, 1], f32[2, 1], f32[6, 1]) {
  %0 = attention %q, %k, %v, causal=0 : f32[2, 1]
  %1 = attention %q, %k, %v, causal=1 : f32[2, 1]
  %2 = attention_grad %q, %k, %v, %0, %dy, causal=0 : f32[6, 1]
  return %0, %1, %2
}";
    let m = parse_module(ir).unwrap();
    nnc_ir::verify_module(&m).unwrap();
    let ln3 = 3f64.ln();
    let inputs = [
        t(&[2, 1], &[0.0, 1.0]),
        t(&[2, 1], &[0.0, ln3]),
        t(&[2, 1], &[2.0, 6.0]),
        t(&[2, 1], &[1.0, 1.0]),
    ];
    let out = eval(&m.funcs[0], &inputs, &[]).unwrap();
    close(&out[0].data, &[4.0, 5.0]);
    close(&out[1].data, &[2.0, 5.0]);
    // dp_j = dy v_j = (2, 6); ds = p (dp - p.dp): row 0 (-1, 1), row 1 (-3/4, 3/4).
    // dq_i = sum_j ds_ij k_j; dk_j = sum_i ds_ij q_i; dv_j = sum_i p_ij dy_i.
    close(&out[2].data, &[ln3, 0.75 * ln3, -0.75, 0.75, 0.75, 1.25]);
}

#[test]
fn every_op_in_the_table_is_tested_here() {
    // A primitive added to the table without a hand-computed interpreter case fails here.
    let src = include_str!("interp.rs");
    for row in TABLE {
        let quoted = format!("\"{}\"", row.mnemonic);
        let in_ir = format!("= {} ", row.mnemonic);
        assert!(
            src.contains(&quoted) || src.contains(&in_ir),
            "no interpreter test for `{}`",
            row.mnemonic
        );
    }
}

/// Going forward a layer's own backward is inert: `custom_grad` is its first operand, and
/// the cotangent it reads (which stands for an adjoint that exists only inside autodiff)
/// evaluates to zeros. Both print and parse back.
#[test]
fn custom_grad_is_its_value_going_forward() {
    let ir = "func @f(%x: f32[2]) -> (f32[2], f32[2]) {
  %0 = exp %x : f32[2]
  %1 = cotangent : f32[2]
  %2 = mul %1, %0 : f32[2]
  %3 = custom_grad %0, %1, %x, %2 : f32[2]
  return %3, %1
}";
    let m = parse_module(ir).unwrap();
    assert_eq!(m.to_string().trim(), ir);
    let x = Tensor::new(DType::F32, vec![2], vec![0.0, 1.0]);
    let out = eval(&m.funcs[0], &[x], &[]).unwrap();
    assert_eq!(out[0].data, [1.0, (1.0f32).exp() as f64]);
    assert_eq!(out[1].data, [0.0, 0.0]);
}

/// A running sum as a scan, forward and reversed: the final carry, and each step's carry
/// stacked in step order. `"loop_var"`, the front end's stand-in, never reaches IR text.
#[test]
fn scan_carries_and_stacks() {
    let body = |name: &str| {
        format!(
            "    func @{name}(%c: f32[2], %x: f32[2]) -> (f32[2], f32[2]) {{
      %0 = add %c, %x : f32[2]
      return %0, %0
    }}"
        )
    };
    let ir = format!(
        "func @f(%xs: f32[3, 2]) -> (f32[2], f32[3, 2], f32[2], f32[3, 2]) {{
  %0 = const 0.0 : f32[2]
  %1 = scan %0, %xs, carries=1, sequences=1, reverse=0 : f32[]
{}
  %2 = scan_out %1, output=0 : f32[2]
  %3 = scan_out %1, output=1 : f32[3, 2]
  %4 = scan %0, %xs, carries=1, sequences=1, reverse=1 : f32[]
{}
  %5 = scan_out %4, output=0 : f32[2]
  %6 = scan_out %4, output=1 : f32[3, 2]
  return %2, %3, %5, %6
}}
",
        body("fwd"),
        body("back")
    );
    let m = parse_module(&ir).unwrap();
    assert_eq!(m.to_string(), ir);
    let xs = Tensor::new(DType::F32, vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = eval(&m.funcs[0], &[xs], &[]).unwrap();
    assert_eq!(out[0].data, [9.0, 12.0]);
    assert_eq!(out[1].data, [1.0, 2.0, 4.0, 6.0, 9.0, 12.0]);
    assert_eq!(out[2].data, [9.0, 12.0]);
    assert_eq!(out[3].data, [9.0, 12.0, 8.0, 10.0, 5.0, 6.0]);
    assert_eq!(
        nnc_ir::Op::from_mnemonic("loop_var"),
        Some(nnc_ir::Op::LoopVar)
    );
}
