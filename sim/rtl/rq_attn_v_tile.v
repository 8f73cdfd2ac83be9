`timescale 1ns/1ps
// repq-hw reference RTL: attention x V by shift-and-add with the sqrt(2) split
// (docs/ops/attn_v_shift.md). No multiplier touches the attention operand.
//
// One output row (query m) meets TD value columns. Per clock (in_valid) one key n: the log-sqrt2 code c
// and the TD value codes v[n, d0 .. d0+TD-1]:
//     c == Z (= 2^bits - 1, the zero state): nothing
//     dv = v - v_zp;  j = c >> 1
//     c even: acc_even += dv << (F - j)          weight 2^-j      (times 2^F)
//     c odd : acc_odd  += dv << (F - j - 1)      weight 2^-(j+1)  (times sqrt 2, applied once below)
// `finish`: out = acc_even + rshift_round(acc_odd * R, Q, mode), R = round(sqrt(2) * 2^Q).
// All shifts are left shifts (exact). err = a code above Z, or F < ceil(c/2) (would truncate): the
// reference raises ValueError on both.
module rq_attn_v_tile #(
    parameter integer TD = 8
) (
    input  wire               clk,
    input  wire               rst,
    input  wire               clear,
    input  wire               in_valid,
    input  wire [7:0]         code,
    input  wire [TD*8-1:0]    v,
    input  wire               finish,
    input  wire [7:0]         zstate,     // Z = 2^bits - 1
    input  wire [5:0]         f,          // shift_frac F
    input  wire [4:0]         q,          // sqrt2_frac_bits Q
    input  wire [31:0]        r_mult,     // R
    input  wire signed [31:0] v_zp,
    input  wire [1:0]         mode,
    output reg                out_valid,
    output reg  [TD*64-1:0]   y,          // signed 64 per lane
    output reg                err
);
    wire       live = (code != zstate);
    wire [6:0] j    = {1'b0, code[7:1]};
    wire       odd  = code[0];
    wire [6:0] need = {1'b0, code[7:1]} + {6'd0, code[0]};     // ceil(c / 2)
    wire [6:0] sh   = odd ? ({1'b0, f} - j - 7'd1) : ({1'b0, f} - j);
    always @(posedge clk) begin
        if (rst || clear)
            err <= 1'b0;
        else if (in_valid && ((code > zstate) || (live && (need > {1'b0, f}))))
            err <= 1'b1;
    end
    always @(posedge clk) begin
        if (rst) out_valid <= 1'b0;
        else     out_valid <= finish;
    end
    genvar d;
    generate
        for (d = 0; d < TD; d = d + 1) begin : lane
            reg  signed [63:0] acc_e;
            reg  signed [63:0] acc_o;
            wire signed [63:0] dv = $signed({56'd0, v[d*8 +: 8]}) - $signed({{32{v_zp[31]}}, v_zp});
            wire signed [63:0] term = dv <<< sh[5:0];
            always @(posedge clk) begin
                if (rst || clear) begin
                    acc_e <= 64'sd0;
                    acc_o <= 64'sd0;
                end else if (in_valid && live && (code <= zstate)) begin
                    if (odd) acc_o <= acc_o + term;
                    else     acc_e <= acc_e + term;
                end
            end
            wire signed [63:0] odd_r;
            rq_rshift_round u_r (.x(acc_o * $signed({32'd0, r_mult})), .s({1'b0, q}), .mode(mode), .y(odd_r));
            always @(posedge clk) begin
                if (finish) y[d*64 +: 64] <= acc_e + odd_r;
            end
        end
    endgenerate
endmodule
