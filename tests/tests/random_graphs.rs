//! Property tests over random valid graphs (DESIGN.md section 8):
//! - print -> parse -> print is the identity,
//! - the verifier accepts every graph the builder made,
//! - the `default` pipeline does not change what a graph computes on the CPU executor.
//!
//! A graph is built from a shrinkable recipe: each step names an op family and carries random numbers
//! that pick operands and attributes. Steps the type rules reject are skipped, so every recipe yields a
//! valid graph, and proptest can shrink a failing recipe to a minimal one.

use kiln_ir::{
    BinaryOp, CompareOp, DType, GeluApprox, Graph, Op, ReduceKind, Tensor, TensorType, UnaryOp, ValueId, WeightStore,
};
use kiln_runtime::cpu::CpuExecutor;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One recipe step: an op family and three numbers that choose operands and attributes.
type Step = (u8, u32, u32, u32);

/// Input shapes chosen so that many pairs broadcast.
const SHAPES: &[&[u64]] = &[&[2, 3], &[3], &[1, 3], &[2, 1], &[4, 2, 3], &[2, 3, 1], &[6]];

struct Builder {
    g: Graph,
    weights: WeightStore,
    rng: ChaCha8Rng,
    /// Float values available as operands.
    floats: Vec<ValueId>,
    steps_taken: usize,
}

impl Builder {
    fn new(seed: u64, num_inputs: usize) -> Builder {
        let mut g = Graph::new("random");
        let rng = ChaCha8Rng::seed_from_u64(seed);
        let mut floats = Vec::new();
        for i in 0..num_inputs {
            floats.push(g.add_input(TensorType::of(DType::F32, SHAPES[(seed as usize + i * 3) % SHAPES.len()])));
        }
        Builder { g, weights: WeightStore::new(), rng, floats, steps_taken: 0 }
    }

    fn pick(&self, r: u32) -> ValueId {
        self.floats[r as usize % self.floats.len()]
    }

    fn dims(&self, v: ValueId) -> Vec<u64> {
        self.g.value_type(v).shape.as_static().expect("random graphs are static").iter().map(|&d| d as u64).collect()
    }

    fn constant(&mut self, t: Tensor) -> ValueId {
        self.g.push(Op::Constant { value: t }, &[]).expect("constants always type-check")
    }

    /// Tries to add `op`; keeps the result as an operand when it is a float tensor.
    fn try_push(&mut self, op: Op, inputs: &[ValueId]) -> Option<ValueId> {
        let v = self.g.push(op, inputs).ok()?;
        let ty = self.g.value_type(v);
        if ty.dtype == DType::F32 && ty.shape.as_static().is_some() {
            self.floats.push(v);
        }
        self.steps_taken += 1;
        Some(v)
    }

    fn random_f32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.rng.random_range(-2.0f32..2.0)).collect()
    }

    fn step(&mut self, (kind, a, b, c): Step) {
        const UNARY: &[UnaryOp] = &[
            UnaryOp::Neg,
            UnaryOp::Abs,
            UnaryOp::Tanh,
            UnaryOp::Sigmoid,
            UnaryOp::Sin,
            UnaryOp::Cos,
            UnaryOp::Relu,
            UnaryOp::Erf,
            UnaryOp::Floor,
            UnaryOp::Exp,
            UnaryOp::Sqrt,
        ];
        const BINARY: &[BinaryOp] = &[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Min];
        let x = self.pick(a);
        let y = self.pick(b);
        let rank = self.g.value_type(x).rank() as i64;
        match kind % 16 {
            0 => {
                let op = UNARY[c as usize % UNARY.len()];
                // Keep exp and sqrt away from overflow and NaN so outputs stay comparable.
                let x = if matches!(op, UnaryOp::Exp | UnaryOp::Sqrt) {
                    match self.try_push(Op::Unary(UnaryOp::Tanh), &[x]) {
                        Some(t) if op == UnaryOp::Sqrt => self.try_push(Op::Unary(UnaryOp::Abs), &[t]).unwrap_or(t),
                        Some(t) => t,
                        None => return,
                    }
                } else {
                    x
                };
                self.try_push(Op::Unary(op), &[x]);
            }
            1 | 2 => {
                self.try_push(Op::Binary(BINARY[c as usize % BINARY.len()]), &[x, y]);
            }
            3 => {
                // A constant operand: folding and CSE get something to do.
                let v = self.constant(Tensor::scalar_f32((c % 7) as f32 * 0.5 - 1.5));
                self.try_push(Op::Binary(BINARY[b as usize % BINARY.len()]), &[x, v]);
            }
            4 => {
                let kinds = [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min];
                let axis = (c as i64 % rank.max(1)) - if b % 2 == 0 { rank } else { 0 };
                let axes = if rank == 0 { vec![] } else { vec![axis] };
                self.try_push(Op::Reduce { kind: kinds[b as usize % 4], axes, keepdims: c % 3 != 0 }, &[x]);
            }
            5 => {
                let op = match c % 3 {
                    0 => Op::Softmax { axis: -1 },
                    1 => Op::Silu {},
                    _ => Op::Gelu { approximate: if b % 2 == 0 { GeluApprox::None } else { GeluApprox::Tanh } },
                };
                self.try_push(op, &[x]);
            }
            6 => {
                // A random permutation of the axes.
                let mut perm: Vec<i64> = (0..rank).collect();
                let mut r = c;
                for i in (1..perm.len()).rev() {
                    perm.swap(i, r as usize % (i + 1));
                    r /= (i + 1) as u32;
                }
                self.try_push(Op::Transpose { perm }, &[x]);
            }
            7 => {
                // Reshape to [n] or [-1, last] through a constant shape tensor.
                let dims = self.dims(x);
                let shape =
                    if c % 2 == 0 || dims.is_empty() { vec![-1] } else { vec![-1, *dims.last().unwrap() as i64] };
                let s = self.constant(Tensor::i64(vec![shape.len()], shape).unwrap());
                self.try_push(Op::Reshape { allowzero: false }, &[x, s]);
            }
            8 => {
                let axis = if rank == 0 { 0 } else { c as i64 % rank };
                self.try_push(Op::Concat { axis }, &[x, y]);
            }
            9 => {
                let axis = c as i64 % (rank + 1);
                if let Some(u) = self.try_push(Op::Unsqueeze { axes: vec![axis] }, &[x])
                    && b % 2 == 0
                {
                    self.try_push(Op::Squeeze { axes: vec![axis] }, &[u]);
                }
            }
            10 => {
                // Duplicate an earlier node exactly (a CSE candidate).
                let nodes: Vec<_> = self.g.nodes().map(|(_, n)| (n.op.clone(), n.inputs.clone())).collect();
                if let Some((op, inputs)) = nodes.get(c as usize % nodes.len().max(1))
                    && op.num_outputs() == 1
                    && !matches!(op, Op::Weight { .. })
                {
                    self.try_push(op.clone(), inputs);
                }
            }
            11 => {
                // Shape arithmetic the constant folder resolves: reshape(y, shape(x)) when sizes agree.
                // The reshape's declared type is the static one a frontend would record (like ONNX
                // value_info); inference alone gives `?` dims until the shape is folded.
                let (xt, yt) = (self.g.value_type(x).clone(), self.g.value_type(y).clone());
                if xt.shape.num_elements() != yt.shape.num_elements() {
                    return;
                }
                if let Ok(s) = self.g.push(Op::Shape { start: 0, end: None }, &[x]) {
                    let r = self.g.add_node(
                        Op::Reshape { allowzero: false },
                        vec![y, s],
                        vec![TensorType::new(yt.dtype, xt.shape)],
                    );
                    self.floats.push(r[0]);
                    self.steps_taken += 1;
                }
            }
            12 => {
                // compare + where.
                let cmp = [CompareOp::Less, CompareOp::Greater, CompareOp::Equal][c as usize % 3];
                if let Ok(m) = self.g.push(Op::Compare(cmp), &[x, y]) {
                    self.try_push(Op::Where {}, &[m, x, y]);
                }
            }
            13 => {
                // A linear layer over a stored weight (model-level op through the weight store).
                let dims = self.dims(x);
                let Some(&k) = dims.last() else { return };
                let n = 1 + (c % 4) as usize;
                let name = format!("w{}", self.weights.len());
                let data = self.random_f32(n * k as usize);
                self.weights.insert_tensor(&name, &Tensor::f32(vec![n, k as usize], data).unwrap()).unwrap();
                let w = self.g.push_weight(&name, &self.weights);
                if let Some(w) = w {
                    self.try_push(Op::Linear {}, &[x, w]);
                }
            }
            14 => {
                // rms_norm / layer_norm over the last dim with a stored scale.
                let dims = self.dims(x);
                let Some(&h) = dims.last() else { return };
                let name = format!("n{}", self.weights.len());
                let data = self.random_f32(h as usize);
                self.weights.insert_tensor(&name, &Tensor::f32(vec![h as usize], data).unwrap()).unwrap();
                if let Some(w) = self.g.push_weight(&name, &self.weights) {
                    let op = if c % 2 == 0 {
                        Op::RmsNorm { eps: 1e-5, offset: 0.0 }
                    } else {
                        Op::LayerNorm { axis: -1, eps: 1e-5 }
                    };
                    self.try_push(op, &[x, w]);
                }
            }
            _ => {
                // matmul with a constant right-hand matrix.
                let dims = self.dims(x);
                let Some(&k) = dims.last() else { return };
                let n = 1 + (c % 3) as usize;
                let data = self.random_f32(k as usize * n);
                let m = self.constant(Tensor::f32(vec![k as usize, n], data).unwrap());
                self.try_push(Op::MatMul {}, &[x, m]);
            }
        }
    }

    /// Outputs: the last few float values (so most of the graph is live) plus one random earlier one.
    fn finish(mut self, pick: u32) -> (Graph, WeightStore) {
        let n = self.floats.len();
        let mut outs: Vec<ValueId> = self.floats[n.saturating_sub(2)..].to_vec();
        outs.push(self.floats[pick as usize % n]);
        self.g.set_outputs(outs);
        (self.g, self.weights)
    }
}

trait PushWeight {
    fn push_weight(&mut self, name: &str, store: &WeightStore) -> Option<ValueId>;
}

impl PushWeight for Graph {
    fn push_weight(&mut self, name: &str, store: &WeightStore) -> Option<ValueId> {
        let ty = store.get(name).ok()?.ty.clone();
        Some(self.add_node(Op::Weight { name: name.to_string() }, vec![], vec![ty])[0])
    }
}

fn inputs_for(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    g.inputs()
        .iter()
        .map(|&v| {
            let dims = g.value_type(v).shape.as_static().unwrap();
            let n = dims.iter().product();
            Tensor::f32(dims, (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()).unwrap()
        })
        .collect()
}

fn close(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(format!("type differs: {} vs {}", a.ty(), b.ty()));
    }
    for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        let same = (x.is_nan() && y.is_nan()) || x == &y || (x - y).abs() <= 1e-5 * y.abs().max(1.0);
        if !same {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

fn recipe() -> impl Strategy<Value = (u64, usize, Vec<Step>, u32)> {
    (
        any::<u64>(),
        1usize..4,
        prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>()), 1..24),
        any::<u32>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_round_trip_verify_and_survive_the_default_pipeline((seed, num_inputs, steps, pick) in recipe()) {
        let mut b = Builder::new(seed, num_inputs);
        for s in steps {
            b.step(s);
        }
        let (g, weights) = b.finish(pick);

        // The verifier accepts what the type rules built.
        if let Err(e) = kiln_ir::verify(&g, Some(&weights)) {
            return Err(TestCaseError::fail(format!("verifier rejected a built graph:\n{e}\n{}", kiln_ir::text::print(&g))));
        }

        // print -> parse -> print is the identity.
        let text = kiln_ir::text::print(&g);
        let parsed = kiln_ir::text::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(kiln_ir::text::print(&parsed), text.clone());

        // The default pipeline keeps the graph valid and computes the same outputs.
        let mut optimised = g.clone();
        let mut manager = kiln_passes::pipelines::pipeline("default").unwrap();
        let mut cx = kiln_passes::PassContext::with_weights(&weights);
        manager.run(&mut optimised, &mut cx).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        kiln_ir::verify(&optimised, Some(&weights)).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let inputs = inputs_for(&g, seed);
        let before = CpuExecutor::new(g, weights.clone()).unwrap().run(&inputs).unwrap();
        let after = CpuExecutor::new(optimised.clone(), weights).unwrap().run(&inputs).unwrap();
        prop_assert_eq!(before.len(), after.len());
        for (i, (x, y)) in after.iter().zip(&before).enumerate() {
            if let Err(e) = close(x, y) {
                return Err(TestCaseError::fail(format!(
                    "output {i} changed by the default pipeline: {e}\nbefore:\n{text}\nafter:\n{}",
                    kiln_ir::text::print(&optimised)
                )));
            }
        }
    }
}
