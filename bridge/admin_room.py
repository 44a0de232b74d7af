"""The admin room: the bot reports there (refused plans, policy errors, moderation) and takes
`!status`, `!plan`, `!sync`, `!policy reload` from the listed admins only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from bridge.logging import get_logger
from bridge.matrix.bot import Bot
from bridge.matrix.received import ReceivedMessage

log = get_logger(component="admin_room")
HELP = ("Commandes : !status (état du pont), !plan (ce qu'une synchronisation changerait), "
        "!sync (synchroniser maintenant), !policy reload (recharger les politiques).")


class AdminRoom:
    def __init__(self, *, bot: Bot, room_id: str, admins: frozenset[str],
                 commands: Callable[[], Mapping[str, Callable[[], Awaitable[str]]]]) -> None:
        self.bot = bot
        self.room_id = room_id
        self.admins = admins
        self.commands = commands

    async def join(self) -> None:
        await self.bot.api.join(self.room_id, as_user=self.bot.user_id)

    async def notify(self, text: str) -> None:
        """Best effort: a report that can't be posted is logged, never raised into the caller."""
        try:
            await self.bot.send_notice(self.room_id, text)
        except Exception as exc:  # noqa: BLE001
            log.warning("admin_notify_failed", error=f"{type(exc).__name__}: {exc}")

    async def on_message(self, msg: ReceivedMessage) -> None:
        if msg.room_id != self.room_id or not msg.body.startswith("!"):
            return
        if not msg.is_new_text:
            # Only a new text message is a command: an edit ("* !sync") or a notice never is.
            log.info("admin_command_ignored", sender=msg.sender, msgtype=msg.content.get("msgtype"))
            return
        if msg.sender not in self.admins:
            log.warning("admin_command_refused", sender=msg.sender)
            await self.notify(f"{msg.sender} : seules les personnes listées dans admin.admins peuvent "
                              "donner des commandes.")
            return
        command = " ".join(msg.body[1:].split()).lower()
        handler = self.commands().get(command)
        if handler is None:
            await self.notify(HELP)
            return
        log.info("admin_command", command=command, sender=msg.sender)
        try:
            answer = await handler()
        except Exception as exc:  # noqa: BLE001 - reported to the admins, who asked
            answer = f"Échec de !{command} : {type(exc).__name__}: {exc}"
        await self.notify(answer)


def format_summary(summary: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in summary.items()) or "rien à faire"


# What the bridge says to its admins (French: the admins are a school district's IT team).
NO_SYNC_YET = "aucune synchronisation depuis le démarrage"
SYNC_REFUSED = "refusée par les garde-fous"


def refused(reasons: Iterable[str]) -> str:
    return ("Synchronisation REFUSÉE par les garde-fous : " + "; ".join(reasons)
            + ". Vérifiez l'export de l'annuaire, ou appliquez avec `ent-bridge sync --apply --allow-mass-removal`.")


def sync_done(summary: Mapping[str, int], failed: int) -> str:
    return format_summary(summary) + (f", {failed} échecs" if failed else "")


def residual(summary: Mapping[str, int]) -> str:
    return f"Après application, il reste à faire : {format_summary(summary)}. La prochaine synchronisation réessaiera."


def export_refused(error: str) -> str:
    return (f"Export de l'annuaire refusé ({error}). Rien n'a changé : les salons et les règles restent "
            "ceux du dernier export valide.")


def policy_refused(error: str) -> str:
    return f"Politique refusée, la précédente reste en vigueur : {error}"


def status(*, active: int, archived: int, pending: int, dead: int, last_sync: str) -> str:
    return (f"{active} salons gérés ({archived} archivés), {pending} évènements en attente, {dead} en échec. "
            f"Dernière synchronisation : {last_sync}.")


def plan(summary: Mapping[str, int], refusals: Iterable[str]) -> str:
    reasons = list(refusals)
    guard = " — REFUSÉ par les garde-fous : " + "; ".join(reasons) if reasons else ""
    return f"Plan : {format_summary(summary)}{guard}"


def synced(last_sync: str) -> str:
    return f"Synchronisation : {last_sync}"


def reloaded(ok: bool) -> str:
    return "Politiques rechargées." if ok else "Rechargement refusé (voir ci-dessus)."
