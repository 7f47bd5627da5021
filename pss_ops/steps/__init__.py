"""Pipeline steps: plan, embed, plan_index, build_index, query, post_filter, publish, report."""
