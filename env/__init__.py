"""The Gymnasium pruning environment, pruning primitives, budgets, baselines, cost accounting."""
