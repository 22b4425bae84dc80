//! `nnc draw`: every example draws; the boxes' parameter counts add up to the model's
//! trained parameters, every statement and input is a box, and `--primitives` draws a box
//! per input and IR node of the optimized forward pass.

mod common;

use common::{examples, nnc, s, scratch};

#[test]
fn every_example_draws_with_its_parameters() {
    let dir = scratch("draw");
    for path in examples() {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = nnc::lang::check(&src).unwrap();
        let Some(model) = checked.module.funcs.iter().find(|f| !f.name.contains('.')) else {
            continue;
        };
        let total: u64 = model
            .params
            .iter()
            .filter(|p| p.kind == nnc::ir::ParamKind::Param)
            .map(|p| {
                p.ty.shape
                    .dims()
                    .iter()
                    .filter_map(|d| d.known())
                    .product::<u64>()
            })
            .sum();
        let out = dir.join("m.svg");
        let (code, _, err) = nnc(&["draw", s(&path), "--model", &model.name, "-o", s(&out)]);
        assert_eq!(code, 0, "{}: {err}", path.display());
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let drawn: u64 = svg
            .split(" params<")
            .filter_map(|chunk| chunk.rsplit(' ').next())
            .filter_map(|n| n.replace(',', "").parse::<u64>().ok())
            .sum();
        assert_eq!(drawn, total, "{}: parameters drawn", path.display());
        let boxes = svg.matches("<rect x=").count();
        let stmts = src
            .lines()
            .filter(|l| l.trim_start().starts_with("return "))
            .count();
        assert!(
            boxes > model.inputs.len() && stmts > 0,
            "{}",
            path.display()
        );
        let (code, prims, err) = nnc(&["draw", s(&path), "--model", &model.name, "--primitives"]);
        assert_eq!(code, 0, "{err}");
        let m = nnc::optimized_module(&checked.module, None).unwrap();
        let f = m.func(&model.name).unwrap();
        assert_eq!(
            prims.matches("<rect x=").count(),
            f.inputs.len() + f.nodes.len(),
            "{}",
            path.display()
        );
    }
}
