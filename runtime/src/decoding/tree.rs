//! Token trees: the candidate continuations a drafter proposes, merged into a prefix tree so that shared
//! prefixes are verified once, and the attention mask that verifies the whole tree in one step.
//!
//! The tree hangs below the *root*, the last token of the context (not yet in the target's KV cache).
//! Nodes are stored in insertion order, so every node comes after its parent; a verification step feeds
//! the root then the nodes in that order, and since a node's ancestors precede it, the keys it attends to
//! are those of positions `0, 1, ..., p` in increasing order, exactly the keys decoding position `p` on
//! its own attends to.

/// One drafted token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeNode {
    pub token: u32,
    /// The parent node, `None` for a child of the root.
    pub parent: Option<usize>,
    /// 1 for a child of the root: the node sits `depth` positions after the root.
    pub depth: usize,
}

/// A prefix tree of drafted tokens below the root (the last context token).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenTree {
    nodes: Vec<TreeNode>,
}

impl TokenTree {
    pub fn new() -> TokenTree {
        TokenTree::default()
    }

    /// A single chain of tokens.
    pub fn chain(tokens: &[u32]) -> TokenTree {
        let mut t = TokenTree::new();
        t.insert_path(tokens, usize::MAX);
        t
    }

    pub fn nodes(&self) -> &[TreeNode] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The deepest node's depth (0 for an empty tree).
    pub fn depth(&self) -> usize {
        self.nodes.iter().map(|n| n.depth).max().unwrap_or(0)
    }

    /// The child of `parent` (`None`: the root) that holds `token`.
    pub fn child(&self, parent: Option<usize>, token: u32) -> Option<usize> {
        self.nodes.iter().position(|n| n.parent == parent && n.token == token)
    }

    /// The children of `parent` (`None`: the root) in insertion order, which is the drafter's order of
    /// preference.
    pub fn children(&self, parent: Option<usize>) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].parent == parent).collect()
    }

    /// Merges the path `tokens` (a continuation of the root) into the tree, sharing its longest prefix
    /// already present, and adds new nodes while the tree has fewer than `max_nodes`. Returns the node
    /// the path ends at (`None` when it ends at the root).
    pub fn insert_path(&mut self, tokens: &[u32], max_nodes: usize) -> Option<usize> {
        let mut at = None;
        for (d, &token) in tokens.iter().enumerate() {
            at = Some(match self.child(at, token) {
                Some(existing) => existing,
                None if self.nodes.len() < max_nodes => {
                    self.nodes.push(TreeNode { token, parent: at, depth: d + 1 });
                    self.nodes.len() - 1
                }
                None => return at,
            });
        }
        at
    }

    /// Whether the tree is one chain, node `i` being the child of node `i - 1` (causal attention can
    /// verify it without a tree mask).
    pub fn is_chain(&self) -> bool {
        self.nodes.iter().enumerate().all(|(i, n)| n.parent == i.checked_sub(1))
    }

    /// The tokens of the verification step: the root, then every node in order.
    pub fn step_tokens(&self, root: u32) -> Vec<u32> {
        std::iter::once(root).chain(self.nodes.iter().map(|n| n.token)).collect()
    }

    /// Positions of the step's tokens when the root sits at `root_position`: a node's position is the
    /// root's plus its depth, the position it would have in the sequence if it were accepted.
    pub fn step_positions(&self, root_position: i64) -> Vec<i64> {
        std::iter::once(root_position).chain(self.nodes.iter().map(|n| root_position + n.depth as i64)).collect()
    }

    /// The `[1 + len, 1 + len]` attention mask of the step (row-major): every token sees the root, its
    /// ancestors and itself.
    pub fn step_mask(&self) -> Vec<bool> {
        let n = self.nodes.len() + 1;
        let mut mask = vec![false; n * n];
        mask[0] = true;
        for (i, node) in self.nodes.iter().enumerate() {
            let row = (i + 1) * n;
            mask[row] = true;
            mask[row + i + 1] = true;
            let mut at = node.parent;
            while let Some(a) = at {
                mask[row + a + 1] = true;
                at = self.nodes[a].parent;
            }
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_merge_on_shared_prefixes_and_the_mask_follows_ancestry() {
        let mut t = TokenTree::new();
        assert_eq!(t.insert_path(&[5, 6, 7], 10), Some(2));
        assert_eq!(t.insert_path(&[5, 8], 10), Some(3));
        assert_eq!(t.insert_path(&[9], 10), Some(4));
        assert_eq!(t.insert_path(&[5, 6], 10), Some(1), "an existing path adds nothing");
        assert_eq!(t.len(), 5);
        assert!(!t.is_chain());
        assert_eq!(t.children(None), vec![0, 4]);
        assert_eq!(t.children(Some(0)), vec![1, 3]);
        assert_eq!(t.step_tokens(1), vec![1, 5, 6, 7, 8, 9]);
        assert_eq!(t.step_positions(10), vec![10, 11, 12, 13, 12, 11]);
        let m = t.step_mask();
        let row = |i: usize| -> Vec<usize> { (0..6).filter(|&j| m[i * 6 + j]).collect() };
        assert_eq!(row(0), vec![0]);
        assert_eq!(row(3), vec![0, 1, 2, 3], "7 sees 5 and 6");
        assert_eq!(row(4), vec![0, 1, 4], "8 sees 5 but not its cousin 6");
        assert_eq!(row(5), vec![0, 5]);
        // The node budget stops a path part way.
        assert_eq!(t.insert_path(&[5, 8, 1, 2], 6), Some(5));
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn a_chain_has_the_causal_mask() {
        let t = TokenTree::chain(&[3, 3, 4]);
        assert!(t.is_chain());
        let m = t.step_mask();
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(m[i * 4 + j], j <= i);
            }
        }
    }
}
