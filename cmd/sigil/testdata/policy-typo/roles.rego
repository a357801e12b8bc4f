package sigil.roles

reader contains sa if some sa in {"web", "batch"}

writer contains "batch"
