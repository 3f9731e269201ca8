"""The daemon's ApprovalBook on a real git remote with real SSH signatures: what a waiting
step sees (who counts, what did not and why), incremental reads, and the report of
decisions that reached no waiting step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import test_approvals
from fakes import workflow
from test_approvals import ALICE, BOB, CAROL, RUN, STEP, commit, decision_file, push

from reconciler.daemon.approvals import ApprovalBook
from reconciler.gitops.git import GitRepo
from reconciler.manifest.policy import Approvers, Policy
from reconciler.manifest.schema import StepBase

# test_approvals' fixtures: keys, the policy's approvers, a remote with a clone, own config
keys, policy, remote = test_approvals.keys, test_approvals.policy, test_approvals.remote
own_git_config = test_approvals.own_git_config


def step(required: int = 2) -> StepBase:
    wf = workflow(
        [
            {
                "name": STEP,
                "action": "CordonNode",
                "target": {"name": "worker-1"},
                "approval": {"required": required, "approvers": ["sre-leads"]},
            }
        ]
    )
    return wf.spec.steps[0]


def test_the_book_reads_new_heads_and_tells_a_step_who_counts(
    remote, keys, policy: Approvers, tmp_path: Path
) -> None:
    bare, clone = remote

    async def go() -> None:
        git = GitRepo(url=str(bare), workdir=tmp_path / "mirror", full_history=True)
        await git.ensure()
        book = ApprovalBook(git, Policy(approvers=policy), tmp_path / "book")
        assert book.enabled
        await book.update(await git.fetch())
        assert book.state(RUN, step()).outcome == "waiting"

        commit(clone, {decision_file(ALICE): "decision: approve\n"}, keys[ALICE])
        commit(clone, {decision_file(CAROL): "decision: approve\n"}, keys[CAROL])
        commit(clone, {decision_file(BOB): "decision: approve\n"}, None)  # unsigned
        push(clone)
        waiter = asyncio.create_task(book.changed(30))
        found = await book.update(await git.fetch())
        await asyncio.wait_for(waiter, 1)  # woken by the update, not by its timeout
        assert len(found) == 3
        view = book.state(RUN, step())
        assert view.outcome == "waiting"
        assert [d["approver"] for d in view.approved_by] == [ALICE]
        assert any("unsigned commit" in r for r in view.refused)
        assert any("not an approver's" in r for r in view.refused)  # carol's key

        commit(clone, {decision_file(BOB, "other-step"): "decision: approve\n"}, keys[BOB])
        commit(
            clone,
            {f"approvals/ghost-0123456789/{STEP}/{BOB}.yaml": "decision: approve\n"},
            keys[BOB],
        )
        # the file bob's unsigned commit made: his signed change of it counts
        commit(clone, {decision_file(BOB): "decision: approve\ncomment: signed\n"}, keys[BOB])
        push(clone)
        found = await book.update(await git.fetch())
        view = book.state(RUN, step())
        assert view.outcome == "approved"
        assert [d["approver"] for d in view.approved_by] == [ALICE, BOB]
        report = book.unreached_report(found, {RUN: {STEP}}, {"ghost-0123456789"})
        assert report is not None
        text = report.decode()
        assert f"run {RUN} has no step 'other-step' with an approval" in text
        assert "run ghost-0123456789 has finished" in text
        assert decision_file(BOB) not in text  # reached its waiting step
        assert book.unreached_report([], {}, set()) is None  # nothing new

    asyncio.run(go())


def test_without_approvers_the_book_reads_nothing(tmp_path: Path) -> None:
    book = ApprovalBook(GitRepo(url="unused", workdir=tmp_path), Policy(), tmp_path / "b")
    assert not book.enabled
    assert asyncio.run(book.update("0" * 40)) == []
