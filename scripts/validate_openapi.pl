#!/usr/bin/perl
# Validates an OpenAPI 3 document against the specification's schema with JSON::Validator
# (Debian: libjson-validator-perl; the schema ships with it, nothing is downloaded). Prints every
# error and exits 1 when there is one. Usage: scripts/validate_openapi.pl FILE
use strict;
use warnings;
use JSON::Validator::Schema::OpenAPIv3;

my $file = shift or die "usage: $0 FILE\n";
my $schema = JSON::Validator::Schema::OpenAPIv3->new("file://$file");
my @errors = @{ $schema->errors };
print "$_\n" for @errors;
exit(@errors ? 1 : 0);
