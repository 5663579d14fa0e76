//! The sampling options shared by `kiln run` and `kiln bench`: greedy decoding unless a temperature is given.

use kiln_runtime::decoding::Sampling;

#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Keep only the k most likely tokens when sampling.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Seed for sampling; the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    /// What the options select. Out-of-range values (a negative temperature, a top-p outside (0, 1]) are
    /// passed on as given: the sampler refuses them with an error that names the value.
    pub fn sampling(&self) -> Sampling {
        if self.temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature: self.temperature,
                top_k: self.top_k.unwrap_or(0),
                top_p: self.top_p,
                seed: self.seed,
            }
        }
    }

    /// The choice in words: `greedy`, or `sampled (temperature 0.8, top-k 40, top-p 0.9, seed 0)`.
    pub fn describe(&self) -> String {
        match self.sampling() {
            Sampling::Greedy => "greedy".to_string(),
            Sampling::Sample { temperature, top_k, top_p, seed } => {
                let top_k = if top_k > 0 { format!(", top-k {top_k}") } else { String::new() };
                format!("sampled (temperature {temperature}{top_k}, top-p {top_p}, seed {seed})")
            }
        }
    }

    /// The choice for a report: `null` when greedy, else the settings.
    pub fn to_json(&self) -> serde_json::Value {
        match self.sampling() {
            Sampling::Greedy => serde_json::Value::Null,
            Sampling::Sample { temperature, top_k, top_p, seed } => {
                // As given on the command line (0.8, not the f32's 0.800000011920929).
                let given = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
                serde_json::json!({ "temperature": given(temperature), "top_k": top_k, "top_p": given(top_p), "seed": seed })
            }
        }
    }
}
