-- Whom a launcher trusts beyond its user's trust rows: the users named by its --trust option.
-- The launcher applies them itself (balsam.claim.trusted_users); the column only lets others see
-- them, so that 'balsam ls' can say which READY tasks no running launcher trusts. The names are
-- checked at the door (balsam.models.validate_user_name); the database bounds how many.

ALTER TABLE launchers ADD COLUMN trust text[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(trust) <= 1000);
