" Vim syntax file for nnc's .nn language (keywords as in lang/src/grammar.pest).
if exists("b:current_syntax")
  finish
endif

syn keyword nnKeyword layer model train rule for in if else param buffer state return grad yield
syn keyword nnConstant true false training
syn keyword nnType f32 f64 i32 int float bool
syn match nnNumber "\<\d\+\(\.\d*\)\?\([eE][+-]\?\d\+\)\?\>"
syn match nnNumber "\.\d\+\([eE][+-]\?\d\+\)\?\>"
syn region nnString start=+"+ end=+"+ oneline
syn match nnComment "#.*$"
syn match nnAdjoint "\<\h\w*\.grad\>"
syn match nnFunction "\<\h\w*\ze\s*("

hi def link nnKeyword Keyword
hi def link nnConstant Constant
hi def link nnType Type
hi def link nnNumber Number
hi def link nnString String
hi def link nnComment Comment
hi def link nnAdjoint Identifier
hi def link nnFunction Function

let b:current_syntax = "nn"
