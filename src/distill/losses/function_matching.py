"""Function matching: KD on views of the batch that teacher and student both see.

Beyer, Zhai, Royer, Markeeva, Anil, Kolesnikov, "Knowledge distillation: A good
teacher is patient and consistent", CVPR 2022. Distillation is treated as matching
the teacher's *function*, not its outputs on a fixed training set: every step the
batch is augmented aggressively (the paper: random crops and mixup), and the teacher
is run on exactly the images the student sees ("consistent teaching"), so its
outputs cannot be cached. The paper finds it pays off mostly with long schedules
("patient") and with students far smaller than the teacher.

The loss itself is Hinton KD on the student's and the teacher's logits of the same
view; the view parameters (``shift``, ``flip``, ``mixup_alpha``) are read by the training loop,
which builds the views with :func:`distill.data.augment.shift_mixup_views` and runs
the teacher online on them. There are no hard labels on a mixed image, so the
recipe rejects terms that need labels (``ce``, ``dkd``) next to this one.
"""

from __future__ import annotations

from torch import Tensor

from distill.losses.kd import kd_loss


def function_matching_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    mixup_alpha: float = 1.0,
    shift: int = 2,
    flip: int = 0,
) -> Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` on logits of the same augmented view, batch mean.

    Args:
        student_logits: ``(N, C)`` student scores on the view.
        teacher_logits: ``(N, C)`` teacher scores on the *same* view (no gradient flows into them).
        temperature: ``T > 0``.
        mixup_alpha: view parameter (used by the loop, not here): ``λ ~ Beta(α, α)`` per sample; 0: no mixing.
        shift: view parameter (used by the loop, not here): random shift of up to this many pixels.
        flip: view parameter (used by the loop, not here): 1 mirrors half of the images left-right.
    """
    del mixup_alpha, shift, flip  # they define the views, which the training loop builds
    return kd_loss(student_logits, teacher_logits, temperature=temperature)


__all__ = ["function_matching_loss"]
