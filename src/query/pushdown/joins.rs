//! Joins of a pushed plan.
//!
//! A tree of inner joins renders flat: its leaves in one FROM, every join
//! condition (and every filter between the joins) in one WHERE. DuckDB
//! reorders joins only among the relations of one SELECT, so nested as
//! derived tables the joins would run in the order DataFusion left them
//! (TPC-H Q2, Q7 and Q18 ran 2-2.4x slower so). For inner joins a
//! condition means the same in ON and in WHERE, and the rule for
//! predicates that can fail is unchanged: each is counted, and none may
//! run beside a row filter.

use std::sync::Arc;

use datafusion::common::NullEquality;
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan};

use super::render::{Rel, Renderer, non_empty, passthrough};
use crate::replica::sql_expr::{Input, Rendered, Scope, Sql, is_ordered_alike, refuse};

/// A join's conditions, and its equality keys' two sides.
struct Conditions {
    all: Vec<String>,
    keys: Vec<(String, String)>,
}

/// The relations and conditions of a flat inner-join tree.
#[derive(Default)]
struct Flat {
    /// `(<query>) AS tN` per leaf.
    from: Vec<String>,
    conditions: Vec<String>,
}

impl Renderer {
    pub(super) fn join(&mut self, join: &Join) -> Rendered<Rel> {
        if join.join_type == JoinType::Inner {
            return self.inner_joins(join);
        }
        let (ta, left, _) = self.child(&join.left)?;
        let (tb, right, _) = self.child(&join.right)?;
        let scope = Scope::derived(vec![
            Input {
                alias: ta.clone(),
                schema: Arc::clone(join.left.schema()),
                failing: left.failing.clone(),
            },
            Input {
                alias: tb.clone(),
                schema: Arc::clone(join.right.schema()),
                failing: right.failing.clone(),
            },
        ])?;
        let Conditions { all, keys } = self.conditions(join, &scope)?;
        let condition = if all.is_empty() {
            "TRUE".to_string()
        } else {
            all.join(" AND ")
        };
        let (l_sql, r_sql) = (left.sql(), right.sql());
        let (nl, nr) = (
            join.left.schema().fields().len(),
            join.right.schema().fields().len(),
        );
        let kind = match join.join_type {
            JoinType::Left => "LEFT",
            JoinType::Right => "RIGHT",
            JoinType::Full => "FULL",
            // Semi and anti joins keep one side's rows for which a row of
            // the other side does (not) match.
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::RightSemi | JoinType::RightAnti => {
                let not = if matches!(join.join_type, JoinType::LeftAnti | JoinType::RightAnti) {
                    "NOT "
                } else {
                    ""
                };
                let left_kept = matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti);
                let ((tk, k_sql, kept, k_schema), (to, o_sql)) = if left_kept {
                    ((&ta, &l_sql, left, join.left.schema()), (&tb, &r_sql))
                } else {
                    ((&tb, &r_sql, right, join.right.schema()), (&ta, &l_sql))
                };
                let columns = non_empty(passthrough(tk, k_schema, 0)).join(", ");
                // A semi join on one key is an uncorrelated IN, which DuckDB
                // runs as a hash semi join; as a correlated EXISTS it was
                // twice as slow (TPC-H Q18). In a WHERE both keep exactly the
                // rows with a match; an anti join stays NOT EXISTS (NOT IN
                // differs on NULLs).
                if let ([(l_key, r_key)], None, "") = (keys.as_slice(), &join.filter, not) {
                    let (k_key, o_key) = if left_kept {
                        (l_key, r_key)
                    } else {
                        (r_key, l_key)
                    };
                    return Ok(Rel::plain(
                        format!(
                            "SELECT {columns} FROM ({k_sql}) AS {tk} WHERE {k_key} IN (SELECT {o_key} FROM ({o_sql}) AS {to})"
                        ),
                        kept.failing,
                    ));
                }
                return Ok(Rel::plain(
                    format!(
                        "SELECT {columns} FROM ({k_sql}) AS {tk} WHERE {not}EXISTS (SELECT 1 FROM ({o_sql}) AS {to} WHERE {condition})"
                    ),
                    kept.failing,
                ));
            }
            _ => return refuse("a mark join"),
        };
        let mut columns = passthrough(&ta, join.left.schema(), 0);
        columns.extend(passthrough(&tb, join.right.schema(), nl));
        debug_assert_eq!(columns.len(), nl + nr);
        let failing = left.failing.iter().chain(&right.failing).copied().collect();
        Ok(Rel::plain(
            format!(
                "SELECT {} FROM ({l_sql}) AS {ta} {kind} JOIN ({r_sql}) AS {tb} ON {condition}",
                non_empty(columns).join(", ")
            ),
            failing,
        ))
    }

    /// `join`'s equality keys and filter over `scope`, as conditions.
    fn conditions(&mut self, join: &Join, scope: &Scope) -> Rendered<Conditions> {
        if join.null_aware || join.null_equality != NullEquality::NullEqualsNothing {
            return refuse("a null-aware join (NOT IN) or one matching NULLs");
        }
        let mut conditions = Vec::new();
        let mut keys = Vec::new();
        for (l, r) in &join.on {
            let t = scope.data_type(l)?;
            if t != scope.data_type(r)? || t.is_floating() || !is_ordered_alike(&t) {
                return refuse("join keys whose equality differs");
            }
            let l = self.exprs(scope).render(l)?;
            let r = self.exprs(scope).render(r)?;
            if l.can_fail || r.can_fail {
                self.failing_predicates += 1;
            }
            conditions.push(format!("({} = {})", l.text, r.text));
            keys.push((l.text, r.text));
        }
        if let Some(filter) = &join.filter {
            conditions.push(self.predicate(scope, filter)?);
        }
        Ok(Conditions {
            all: conditions,
            keys,
        })
    }

    /// A tree of inner joins as one SELECT over all its leaves.
    fn inner_joins(&mut self, join: &Join) -> Rendered<Rel> {
        let mut flat = Flat::default();
        let columns = self.flat_join(join, &mut flat)?;
        let list: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, column)| format!("{} AS c{i}", column.text))
            .collect();
        let mut select = format!(
            "SELECT {} FROM {}",
            non_empty(list).join(", "),
            flat.from.join(", ")
        );
        if !flat.conditions.is_empty() {
            select.push_str(" WHERE ");
            select.push_str(&flat.conditions.join(" AND "));
        }
        Ok(Rel::plain(
            select,
            columns.iter().map(|c| c.can_fail).collect(),
        ))
    }

    /// Adds `join`'s leaves and conditions to `flat`; returns how its
    /// output columns render.
    fn flat_join(&mut self, join: &Join, flat: &mut Flat) -> Rendered<Vec<Sql>> {
        let mut columns = self.flat_input(&join.left, flat)?;
        columns.extend(self.flat_input(&join.right, flat)?);
        let scope = Scope::mapped(&join.schema, columns.clone())?;
        let conditions = self.conditions(join, &scope)?;
        flat.conditions.extend(conditions.all);
        Ok(columns)
    }

    /// Adds `plan` to `flat`: through the joins, column renames and
    /// filters of the tree, and as a leaf (a derived table) otherwise.
    fn flat_input(&mut self, plan: &Arc<LogicalPlan>, flat: &mut Flat) -> Rendered<Vec<Sql>> {
        if !in_inner_join_tree(plan) {
            let (t, rel, _) = self.child(plan)?;
            flat.from.push(format!("({}) AS {t}", rel.sql()));
            return Ok((0..plan.schema().fields().len())
                .map(|i| Sql {
                    text: format!("{t}.c{i}"),
                    // Unknown lineage counts as failing.
                    can_fail: rel.failing.get(i).copied().unwrap_or(true),
                })
                .collect());
        }
        match plan.as_ref() {
            LogicalPlan::Join(join) => self.flat_join(join, flat),
            LogicalPlan::SubqueryAlias(alias) => self.flat_input(&alias.input, flat),
            LogicalPlan::Projection(projection) => {
                let input = self.flat_input(&projection.input, flat)?;
                let scope = Scope::mapped(projection.input.schema(), input)?;
                projection
                    .expr
                    .iter()
                    .map(|expr| match column_of(expr) {
                        Some(column) => scope.column(column),
                        None => refuse("a computed column inside a join tree"),
                    })
                    .collect()
            }
            LogicalPlan::Filter(filter) => {
                let columns = self.flat_input(&filter.input, flat)?;
                let scope = Scope::mapped(filter.input.schema(), columns.clone())?;
                let predicate = self.predicate(&scope, &filter.predicate)?;
                flat.conditions.push(predicate);
                Ok(columns)
            }
            other => refuse(format!("{} in a join tree", other.display())),
        }
    }
}

/// Whether `plan` is an inner join, possibly under column renames and
/// filters: part of the tree [`Renderer::inner_joins`] renders flat.
fn in_inner_join_tree(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Join(join) => join.join_type == JoinType::Inner,
        LogicalPlan::SubqueryAlias(alias) => in_inner_join_tree(&alias.input),
        LogicalPlan::Filter(filter) => in_inner_join_tree(&filter.input),
        LogicalPlan::Projection(projection) => {
            projection.expr.iter().all(|e| column_of(e).is_some())
                && in_inner_join_tree(&projection.input)
        }
        _ => false,
    }
}

/// The column `expr` passes on unchanged, if it does (under any alias).
fn column_of(expr: &Expr) -> Option<&datafusion::common::Column> {
    match expr {
        Expr::Column(column) => Some(column),
        Expr::Alias(alias) => column_of(&alias.expr),
        _ => None,
    }
}
