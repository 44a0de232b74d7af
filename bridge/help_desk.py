"""Help where people are: in a direct chat with the bot, `!aide` says what that person can do
(a legal guardian, a teacher, a director, an admin: what the directory makes them); an unknown
command gets the help, never silence."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bridge.access.snapshot import AccessSnapshot
from bridge.admin_room import HELP as ADMIN_HELP
from bridge.logging import get_logger
from bridge.matrix.bot import Bot
from bridge.matrix.received import ReceivedMessage

log = get_logger(component="help")
HELLO = {"fr": "Bonjour ! Je suis le robot de l'ENT de votre établissement.",
         "en": "Hello! I am your school's ENT bot."}
ROLES = {
    "guardian": {
        "fr": "Comme responsable légal, vous écrivez aux enseignants de votre enfant dans son salon de suivi "
              "(« Suivi de … ») et vous suivez le salon de sa classe et les annonces de l'établissement. Vous "
              "pouvez écrire en message direct aux enseignants et à la direction de vos enfants ; les autres "
              "familles ne sont pas joignables.",
        "en": "As a legal guardian, you write to your child's teachers in their follow-up room and read their "
              "class room and the school's announcements. You can message your children's teachers and the "
              "director directly; other families can't be reached."},
    "teacher": {
        "fr": "Comme enseignant(e), vous modérez les salons de vos classes et les salons de suivi de vos élèves : "
              "vous pouvez y retirer un message, et le robot retire ceux qui sont contraires à la charte. Vous "
              "pouvez écrire en message direct aux responsables légaux de vos élèves et à vos collègues. Une "
              "annonce que les familles doivent confirmer : « !annonce … » dans le salon ; « !annonces » la "
              "suit. Absent(e) ? « !absent jusqu'au 2026-12-12 », puis « !présent ».",
        "en": "As a teacher, you moderate your classes' rooms and your pupils' follow-up rooms: you can remove "
              "a message there, and the bot removes those against the charter. You can message your pupils' "
              "legal guardians and your colleagues directly."},
    "director": {
        "fr": "Comme directeur ou directrice, vous administrez le salon de l'établissement (les annonces) ; le "
              "salon des modérateurs reçoit les signalements de la modération. Vous pouvez écrire à toutes les "
              "familles de l'établissement.",
        "en": "As the director, you run the school's room (announcements); the moderators' room receives the "
              "moderation's reports. You can write to every family of the school."},
    "admin": {"fr": "Comme administrateur du pont, dans le salon d'administration : " + ADMIN_HELP,
              "en": "As an administrator of the bridge, in the admin room: !status, !plan, !sync, !policy reload."},
}
OUTRO = {"fr": "Vos messages sont chiffrés de bout en bout. Écrivez !aide pour revoir ce message.",
         "en": "Your messages are end-to-end encrypted. Write !help to see this again."}
NOT_A_COMMAND = {"fr": "Je ne réponds qu'aux commandes : écrivez !aide pour savoir ce que vous pouvez faire ici.",
                 "en": "I only answer commands: write !help to see what you can do here."}
_SIDE_ROLE = {"teacher": "teacher", "staff": "teacher", "director": "director", "guardian": "guardian",
              "co": "guardian", "parent": "guardian"}


def help_text(roles: frozenset[str], *, language: str) -> str:
    """What to say to someone with these roles (pure); the order is the roles', not the set's."""
    lang = language if language in HELLO else "fr"
    parts = [HELLO[lang]] + [ROLES[r][lang] for r in ("guardian", "teacher", "director", "admin") if r in roles]
    return "\n\n".join([*parts, OUTRO[lang]])


class HelpDesk:
    def __init__(self, *, bot: Bot, snapshot: AccessSnapshot | None, admins: frozenset[str], language: str,
                 is_managed: Callable[[str], Awaitable[bool]], admin_room: str | None,
                 commands: Callable[[ReceivedMessage], Awaitable[str | None]] | None = None) -> None:
        """commands: other commands a direct chat takes (absences): their answer, or None."""
        self.commands = commands
        self.bot = bot
        self.snapshot = snapshot
        self.admins = admins
        self.language = language
        self.is_managed = is_managed  # the rooms the bridge runs: help is given in direct chats only
        self.admin_room = admin_room

    def roles(self, user: str) -> frozenset[str]:
        sides: frozenset[str] = frozenset()
        if self.snapshot is not None:
            try:
                self.snapshot.refresh()
                sides = self.snapshot.sides(user)
            except Exception as exc:  # noqa: BLE001 - help without roles beats no help
                log.warning("help_roles_unreadable", error=type(exc).__name__)
        roles = {_SIDE_ROLE[s] for s in sides if s in _SIDE_ROLE}
        return frozenset(roles | ({"admin"} if user in self.admins else set()))

    def _direct(self, room_id: str) -> bool:
        """A chat of the bot and one person (a group chat the bot is in is not its to answer)."""
        client = getattr(self.bot, "client", None)
        room = client.rooms.get(room_id) if client is not None else None
        return client is None or (room is not None and room.member_count <= 2)

    async def on_message(self, msg: ReceivedMessage) -> None:
        if msg.sender == self.bot.user_id or msg.room_id == self.admin_room:
            return
        if not msg.is_new_text:
            return  # an edit, a notice, a reaction: never answered (no answer loops between bots)
        if not self._direct(msg.room_id) or await self.is_managed(msg.room_id):
            return
        if self.commands is not None and (answer := await self.commands(msg)) is not None:
            text = answer
        elif msg.body.strip().startswith("!"):
            text = help_text(self.roles(msg.sender), language=self.language)
        else:
            text = NOT_A_COMMAND.get(self.language, NOT_A_COMMAND["fr"])
        log.info("help_given", room_id=msg.room_id, command=msg.body.strip().startswith("!"))
        await self.bot.send_notice(msg.room_id, text)
